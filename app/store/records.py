"""What the store keeps, as plain records: a result (its fields defined once, in
:data:`FIELDS`), an upload batch, a PACS send, a model's re-read. No database and no files here."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Field:
    """One stored field of a result: its SQLite column and its public JSON form.

    The table, the row object, the API's JSON and the OpenAPI schema are all
    made from :data:`FIELDS`, so they cannot drift apart.
    """

    name: str
    sql: str  # column type (NOT NULL columns added later carry a DEFAULT)
    schema: dict | None  # JSON schema of the public value; None: never public
    description: str = ""
    kind: str = "value"  # "value", "bool" (INTEGER 0/1) or "json" (TEXT)
    public: str | None = None  # the public name when it differs from ``name``
    digits: int | None = None  # rounding of the public value

    @property
    def public_name(self) -> str:
        """The field's name in the API's JSON."""
        return self.public or self.name


FIELDS: tuple[Field, ...] = (
    Field("id", "TEXT PRIMARY KEY", {"type": "string"}, "result id (unguessable)"),
    Field("owner", "TEXT NOT NULL", None),
    Field("created", "REAL NOT NULL", {"type": "number"}, "upload time, seconds since 1970 (UTC)"),
    Field("source_format", "TEXT NOT NULL", {"type": "string", "enum": ["DICOM", "PNG", "JPEG"]}),
    Field(
        "positive",
        "INTEGER NOT NULL",
        {"type": "boolean"},
        "the verdict at the operating point: pneumothorax suspected",
        kind="bool",
    ),
    Field(
        "probability",
        "REAL NOT NULL",
        {"type": "number", "minimum": 0, "maximum": 1},
        "image-level probability of pneumothorax (calibrated), or an uncalibrated score "
        "when probability_kind says so",
        digits=4,
    ),
    Field(
        "threshold",
        "REAL NOT NULL",
        {"type": "number"},
        "the operating point's threshold on probability (positive at or above)",
        digits=4,
    ),
    Field("area_px", "INTEGER NOT NULL", {"type": "integer"}, "outlined area in pixels"),
    Field(
        "area_cm2",
        "REAL",
        {"type": ["number", "null"]},
        "outlined area in cm² (null without a plausible pixel spacing)",
        digits=2,
    ),
    Field(
        "side",
        "TEXT NOT NULL",
        {"type": "object"},
        "patient side of the outlined region",
        kind="json",
    ),
    Field(
        "meta",
        "TEXT NOT NULL",
        {"type": "object"},
        "image metadata safe to show (no patient identifiers)",
        kind="json",
        public="metadata",
    ),
    Field("identifiers", "TEXT NOT NULL", None, kind="json"),
    Field("model", "TEXT NOT NULL", {"type": "string"}, "model name and version"),
    Field(
        "rle",
        "TEXT NOT NULL",
        {"type": "string"},
        "SIIM relative RLE, column-major, -1 if empty",
        public="mask_rle",
    ),
    Field("timings", "TEXT NOT NULL", None, kind="json"),
    Field(
        "file_name",
        "TEXT NOT NULL DEFAULT ''",
        {"type": "string"},
        "the uploader's own file name (shown to its owner only)",
        public="file",
    ),
    Field(
        "probability_kind",
        "TEXT NOT NULL DEFAULT 'score'",
        {"type": "string", "enum": ["probability", "score"]},
        "probability: calibrated; score: an uncalibrated model output",
    ),
    Field(
        "operating_point",
        "TEXT NOT NULL DEFAULT '{}'",
        {"type": "object"},
        "the verdict's rule: name, threshold (on the shown probability's scale) and "
        "calibrated_threshold, the sensitivity and specificity it had on the tune split "
        "(split), the mask threshold of the outlined region, the review band, the "
        "prevalence the probability is calibrated at and the site's (site_prevalence), "
        "the heat map's scale, and size_note where the film was smaller than the model's "
        "working resolution",
        kind="json",
    ),
    Field(
        "batch",
        "TEXT NOT NULL DEFAULT ''",
        {"type": "string"},
        "id of the upload batch (several files sent at once; its page is /batches/<id>), "
        "empty for a single file",
    ),
    Field(
        "finding_below_threshold",
        "INTEGER NOT NULL DEFAULT 0",
        {"type": "boolean"},
        "negative verdict with the probability in the review band (between the triage "
        "point and the operating point): look again",
        kind="bool",
    ),
    Field("team_id", "INTEGER", None),  # the uploader's team (migration 3)
    # what the worklist's search reads: the file name, accession number, patient name and
    # id, lower case (migration 5); never public, never in a URL or a log
    Field("search_text", "TEXT NOT NULL DEFAULT ''", None),
    # the uploaded file's SHA-256 and its SOP Instance UID's, so that a second upload of
    # the same study is recognised (migration 5; '' where unknown)
    Field("digest", "TEXT NOT NULL DEFAULT ''", None),
    Field("instance_key", "TEXT NOT NULL DEFAULT ''", None),
)
#: Public fields computed from the row rather than stored.
DERIVED_SCHEMA = {
    "verdict": {"type": "string", "enum": ["pneumothorax suspected", "not detected"]},
}

ID_BYTES = 16  # 128-bit unguessable ids


@dataclass
class ResultRow:
    """One stored result (fields in the order of :data:`FIELDS`)."""

    id: str
    owner: str
    created: float
    source_format: str
    positive: bool
    probability: float
    threshold: float
    area_px: int
    area_cm2: float | None
    side: dict
    meta: dict
    identifiers: dict
    model: str
    rle: str
    timings: dict
    file_name: str = ""
    probability_kind: str = "score"
    operating_point: dict = field(default_factory=dict)
    batch: str = ""
    finding_below_threshold: bool = False
    team_id: int | None = None
    search_text: str = ""
    digest: str = ""
    instance_key: str = ""

    @property
    def verdict(self) -> str:
        """'pneumothorax suspected' or 'not detected'."""
        return "pneumothorax suspected" if self.positive else "not detected"

    def public_dict(self) -> dict:
        """JSON for the API and pages: every public field, never the patient identifiers."""
        out = {}
        for f in FIELDS:
            if f.schema is None:
                continue
            value = getattr(self, f.name)
            if f.digits is not None and value is not None:
                value = round(value, f.digits)
            out[f.public_name] = value
        out["verdict"] = self.verdict
        return out


def public_schema() -> dict:
    """JSON schema of :meth:`ResultRow.public_dict` (the OpenAPI result, without links)."""
    props = {
        f.public_name: dict(f.schema, **({"description": f.description} if f.description else {}))
        for f in FIELDS
        if f.schema is not None
    }
    props.update(DERIVED_SCHEMA)
    return {"type": "object", "properties": props, "required": sorted(props)}


def search_text(file_name: str, identifiers: dict) -> str:
    """What a result is found by in the worklist's search: its file name, accession
    number, patient name (DICOM's ``^`` as spaces) and patient id, lower case."""
    parts = [file_name] + [
        str(identifiers.get(k) or "") for k in ("accession_number", "patient_name", "patient_id")
    ]
    return " | ".join(p.replace("^", " ").strip().lower() for p in parts if p and p.strip())


def instance_key(identifiers: dict) -> str:
    """The SHA-256 of a study's SOP Instance UID ('' without one): the same instance
    uploaded twice has the same key (the UID itself is not indexed)."""
    uid = str(identifiers.get("sop_instance_uid") or "").strip()
    return hashlib.sha256(uid.encode()).hexdigest() if uid else ""


def new_id() -> str:
    """A new unguessable result id."""
    return secrets.token_urlsafe(ID_BYTES)


def valid_id(result_id: str) -> bool:
    """True when ``result_id`` has the shape of an id (nothing else reaches the disk)."""
    return (
        isinstance(result_id, str)
        and 16 <= len(result_id) <= 64
        and all(c.isalnum() or c in "-_" for c in result_id)
    )


@dataclass
class SendState:
    """One result's send to the PACS."""

    result_id: str
    state: str  # queued | sending | sent | failed
    attempts: int
    last_error: str | None
    updated: float
    sent_at: float | None
    seg_sop_uid: str | None
    next_attempt: float | None = None  # when a failed send is tried again (back-off)

    def to_dict(self) -> dict:
        """Plain JSON for the result page's send status."""
        return {
            "state": self.state,
            "attempts": self.attempts,
            "error": self.last_error,
            "updated": self.updated,
            "sent_at": self.sent_at,
            "seg_sop_instance_uid": self.seg_sop_uid,
            "next_attempt": self.next_attempt,
        }


@dataclass(frozen=True)
class ReadRow:
    """One model's read of a stored study (``pneumo reread``), kept beside the first
    read (the result itself). ``error`` is set, and the numbers are ``None``, when the
    model could not read it."""

    result_id: str
    model: str
    created: float
    probability: float | None
    positive: bool | None
    threshold: float | None
    area_px: int | None
    rle: str | None
    error: str | None = None


#: What each role may do. ``admin``: manage users, tokens and retention, and read and review
#: the team's results; ``radiologist``: read and review the team's results; ``uploader``:
#: upload, and see only what it uploaded.
ROLES = ("admin", "radiologist", "uploader")


@dataclass(frozen=True)
class User:
    """A login: its team and role."""

    id: int
    username: str
    team_id: int | None
    team: str
    role: str

    @property
    def owner(self) -> str:
        """The owner key of what this user uploads."""
        return f"user:{self.id}"

    @property
    def reads_team(self) -> bool:
        """True for the roles that read and review the whole team's results."""
        return self.role in ("admin", "radiologist")


@dataclass(frozen=True)
class Scope:
    """Whose results a caller may read: its own (``owner``), and with ``team_id`` set the
    whole team's. A browser session without a login, and an uploader, see only their own."""

    owner: str
    team_id: int | None = None

    @classmethod
    def of(cls, owner: "str | Scope") -> "Scope":
        """A scope from an owner key (own results only) or a scope."""
        return owner if isinstance(owner, Scope) else cls(owner)


#: The reasons a reviewer may give for disagreeing with the model.
REVIEW_REASONS = {
    "missed": "missed pneumothorax",
    "false_alarm": "false alarm",
    "wrong_extent": "wrong extent",
    "other": "other",
}


@dataclass(frozen=True)
class Review:
    """A radiologist's verdict on a result: agrees with the model, or not and why, with an
    optional corrected mask (SIIM RLE at the image's size)."""

    result_id: str
    reviewer: str  # the reviewer's owner key (user:<id>)
    reviewer_name: str
    created: float
    agrees: bool
    reason: str | None = None
    corrected_rle: str | None = None

    def present(self, model_positive: bool) -> bool | None:
        """Whether there is a pneumothorax, by this review of a result the model called
        ``model_positive``: agreeing, the model's verdict; disagreeing, by the reason
        (*missed*: yes, *false alarm*: no, *wrong extent*: the model's verdict, *other*:
        ``None``, the review cannot say)."""
        if self.agrees:
            return bool(model_positive)
        return {"missed": True, "false_alarm": False, "wrong_extent": bool(model_positive)}.get(
            self.reason or ""
        )

    def to_dict(self) -> dict:
        """Plain JSON for the API and pages (the reviewer's name, never a patient's)."""
        return {
            "reviewer": self.reviewer_name,
            "created": self.created,
            "agrees": self.agrees,
            "reason": self.reason,
            "corrected_mask": self.corrected_rle is not None,
            "corrected_mask_rle": self.corrected_rle,
        }


def newest_correction(reviews: list[Review]) -> Review | None:
    """The newest of ``reviews`` (newest first, as the reviews room lists them) that
    carries a corrected mask, or ``None``."""
    return next((v for v in reviews if v.corrected_rle is not None), None)


@dataclass(frozen=True)
class AuditEvent:
    """One access to patient data: who, when, which result, from where. Never a patient
    identifier: the result id is the only link to the study."""

    id: int
    at: float
    actor: str
    team_id: int | None
    action: str
    result_id: str | None
    address: str | None
    detail: str | None

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "at": self.at,
            "actor": self.actor,
            "team_id": self.team_id,
            "action": self.action,
            "result_id": self.result_id,
            "address": self.address,
            "detail": self.detail,
        }
