"""The PACS connection over DICOMweb, through ``dicomweb-client``.

* **Send back** (STOW-RS): a DICOM result's SEG is stored on the configured
  server by the *Send to PACS* button, and automatically for every new DICOM
  result when ``PNEUMO_DICOMWEB_AUTOSEND=1``. The SEG's UIDs derive from the
  result id (:func:`pneumo.seg.stable_uid`), so a resend replaces, never
  duplicates. Each send's state lives in the ``pacs_sends`` table beside the
  results; a failure is shown on the result page with its reason and retried:
  on the next view of that page once ``PNEUMO_DICOMWEB_RETRY_AFTER`` seconds
  have passed, by the *Retry now* button, for every unfinished send when the
  app starts, and by ``python -m app.cli pacs retry``. Nothing is dropped.
* **Pull** (QIDO-RS + WADO-RS): search studies by patient ID, accession number
  and study date (chest CR/DX), import the chosen ones for analysis.

Settings (``PNEUMO_`` environment variables or the app config):
``DICOMWEB_URL`` (the server's DICOMweb root, e.g. ``http://pacs:8042/dicom-web``),
``DICOMWEB_USERNAME`` + ``DICOMWEB_PASSWORD`` (basic auth) or
``DICOMWEB_TOKEN`` (bearer), ``DICOMWEB_AUTOSEND``, ``DICOMWEB_TIMEOUT``
(seconds, default 20), ``DICOMWEB_RETRY_AFTER`` (seconds, default 60).
"""
from __future__ import annotations

import io
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pydicom
from flask import (Blueprint, abort, current_app, flash, jsonify, redirect, render_template,
                   request, url_for)

from pneumo.errors import PneumoError

from app import service
from app.store import ResultRow, Store

log = logging.getLogger("pneumo.app")
bp = Blueprint("pacs", __name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS pacs_sends (
    result_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,          -- queued | sending | sent | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated REAL NOT NULL,
    sent_at REAL,
    seg_sop_uid TEXT
);
CREATE INDEX IF NOT EXISTS pacs_sends_state ON pacs_sends(state, updated);
"""
#: A send still "sending" after this long died with its process; it may be claimed again.
STALE_SENDING_S = 600.0
#: Modalities that are never X-rays to analyse (our own SEGs live in the same study).
NON_IMAGE_MODALITIES = frozenset({"SEG", "SR", "PR", "KO", "DOC", "REG", "RWV", "OT_SR"})
CHEST_MODALITIES = frozenset({"CR", "DX"})


class PacsError(PneumoError):
    """The PACS could not be reached, refused the request or is not configured."""

    http_status = 502
    code = "pacs_error"


@dataclass(frozen=True)
class PacsSettings:
    """Where the PACS is and how to log in to it."""

    url: str | None = None
    username: str | None = None
    password: str | None = None
    token: str | None = None
    autosend: bool = False
    timeout: float = 20.0
    retry_after_s: float = 60.0

    @property
    def configured(self) -> bool:
        """True when a DICOMweb server URL is set."""
        return bool(self.url)

    @classmethod
    def from_config(cls, config) -> "PacsSettings":
        """Read ``DICOMWEB_*`` from a Flask config (values may be JSON-parsed by Flask).

        Raises:
            ValueError: a value the connection cannot use, naming the variable.
        """
        def text(key):
            """A setting as text, ``None`` when unset or empty."""
            value = config.get(key)
            return None if value in (None, "") else str(value)

        def number(key, default):
            """A setting as a positive number (``default`` when unset), checked."""
            value = config.get(key)
            try:
                out = default if value in (None, "") else float(value)
            except (TypeError, ValueError):
                raise ValueError(f"PNEUMO_{key} must be a number of seconds, got {value!r}") \
                    from None
            if out <= 0:
                raise ValueError(f"PNEUMO_{key} must be positive, got {value!r}")
            return out

        auto = str(config.get("DICOMWEB_AUTOSEND", "")).strip().lower()
        if auto not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"PNEUMO_DICOMWEB_AUTOSEND must be 1 or 0, got {auto!r}")
        url = text("DICOMWEB_URL")
        if url and not url.startswith(("http://", "https://")):
            raise ValueError(f"PNEUMO_DICOMWEB_URL must start with http:// or https://, got {url!r}")
        settings = cls(url=url.rstrip("/") if url else None,
                       username=text("DICOMWEB_USERNAME"), password=text("DICOMWEB_PASSWORD"),
                       token=text("DICOMWEB_TOKEN"), autosend=auto in ("1", "true", "yes", "on"),
                       timeout=number("DICOMWEB_TIMEOUT", 20.0),
                       retry_after_s=number("DICOMWEB_RETRY_AFTER", 60.0))
        if settings.token and settings.username:
            raise ValueError("Set either PNEUMO_DICOMWEB_TOKEN or PNEUMO_DICOMWEB_USERNAME, "
                             "not both.")
        return settings


def make_client(settings: PacsSettings):
    """A ``dicomweb_client.DICOMwebClient`` for the configured server (no built-in
    retries: a failed send is recorded and retried by this module)."""
    import requests
    from dicomweb_client.api import DICOMwebClient
    if not settings.configured:
        raise PacsError("No PACS is configured: set PNEUMO_DICOMWEB_URL.")
    _quiet("dicomweb_client")  # it logs study UIDs at INFO on every call
    session = requests.Session()
    if settings.token:
        session.headers["Authorization"] = f"Bearer {settings.token}"
    elif settings.username:
        session.auth = (settings.username, settings.password or "")
    client = DICOMwebClient(url=settings.url, session=session, timeout=settings.timeout)
    client.set_http_retry_params(retry=False)
    return client


def _quiet(name: str) -> None:
    logger = logging.getLogger(name)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


def describe_failure(exc: Exception, settings: PacsSettings) -> str:
    """A message for the result page: what failed, never patient data."""
    import requests
    if isinstance(exc, PacsError):
        return str(exc)
    if isinstance(exc, requests.exceptions.Timeout):
        return f"The PACS at {settings.url} did not answer within {settings.timeout:g} s."
    if isinstance(exc, requests.exceptions.ConnectionError):
        return f"The PACS at {settings.url} could not be reached (is it running?)."
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        hint = (" Check PNEUMO_DICOMWEB_USERNAME/PASSWORD or PNEUMO_DICOMWEB_TOKEN."
                if status in (401, 403) else "")
        return f"The PACS at {settings.url} answered HTTP {status}.{hint}"
    return f"Sending failed: {type(exc).__name__}."


# -- send state ----------------------------------------------------------------

@dataclass
class SendState:
    """One result's send to the PACS."""

    result_id: str
    state: str
    attempts: int
    last_error: str | None
    updated: float
    sent_at: float | None
    seg_sop_uid: str | None

    def to_dict(self) -> dict:
        """Plain JSON for the result page's send status."""
        return {"state": self.state, "attempts": self.attempts, "error": self.last_error,
                "updated": self.updated, "sent_at": self.sent_at,
                "seg_sop_instance_uid": self.seg_sop_uid}


def get_state(store: Store, result_id: str) -> SendState | None:
    """The send state of a result's SEG, or None if it was never queued."""
    with store.connect() as db:
        r = db.execute("SELECT * FROM pacs_sends WHERE result_id = ?", (result_id,)).fetchone()
    if r is None:
        return None
    return SendState(r["result_id"], r["state"], r["attempts"], r["last_error"], r["updated"],
                     r["sent_at"], r["seg_sop_uid"])


def _mark_queued(store: Store, row: ResultRow) -> None:
    with store.connect() as db:
        db.execute("INSERT INTO pacs_sends (result_id, owner, state, updated) VALUES (?,?,?,?) "
                   "ON CONFLICT(result_id) DO UPDATE SET state = 'queued', "
                   "updated = excluded.updated WHERE pacs_sends.state != 'sending'",
                   (row.id, row.owner, "queued", time.time()))


def _claim(store: Store, row: ResultRow) -> bool:
    """Mark the send as in progress; ``False`` if another thread or worker holds it."""
    now = time.time()
    with store.connect() as db:
        cur = db.execute(
            "INSERT INTO pacs_sends (result_id, owner, state, updated) VALUES (?,?,'sending',?) "
            "ON CONFLICT(result_id) DO UPDATE SET state = 'sending', updated = excluded.updated "
            "WHERE pacs_sends.state != 'sending' OR pacs_sends.updated < ?",
            (row.id, row.owner, now, now - STALE_SENDING_S))
        return cur.rowcount == 1


def _finish(store: Store, result_id: str, error: str | None, seg_uid: str | None) -> None:
    now = time.time()
    with store.connect() as db:
        if error is None:
            db.execute("UPDATE pacs_sends SET state = 'sent', attempts = attempts + 1, "
                       "last_error = NULL, updated = ?, sent_at = ?, seg_sop_uid = ? "
                       "WHERE result_id = ?", (now, now, seg_uid, result_id))
        else:
            db.execute("UPDATE pacs_sends SET state = 'failed', attempts = attempts + 1, "
                       "last_error = ?, updated = ? WHERE result_id = ?",
                       (error, now, result_id))


def unfinished(store: Store, limit: int = 500) -> list[tuple[str, str]]:
    """``(result_id, owner)`` of sends not yet done (queued, failed, stale), oldest first."""
    stale = time.time() - STALE_SENDING_S
    with store.connect() as db:
        db.execute("DELETE FROM pacs_sends WHERE result_id NOT IN (SELECT id FROM results)")
        rows = db.execute(
            "SELECT result_id, owner FROM pacs_sends WHERE state IN ('queued', 'failed') "
            "OR (state = 'sending' AND updated < ?) ORDER BY updated LIMIT ?",
            (stale, limit)).fetchall()
    return [(r[0], r[1]) for r in rows]


# -- sending -------------------------------------------------------------------

def send_result(store: Store, settings: PacsSettings, row: ResultRow) -> SendState:
    """Store the result's SEG on the PACS now (STOW-RS) and record the outcome.

    Returns the state after the attempt (``sent`` or ``failed`` with the reason;
    unchanged when another sender holds it). Never raises for PACS failures.
    """
    if row.source_format != "DICOM":
        raise PacsError("Only DICOM results have a DICOM Segmentation to send.")
    if not _claim(store, row):
        return get_state(store, row.id)
    error, seg_uid = None, None
    try:
        seg = pydicom.dcmread(io.BytesIO(service.seg_bytes(store, row)))
        seg_uid = str(seg.SOPInstanceUID)
        _stow(settings, seg)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
        error = describe_failure(exc, settings)
        log.warning("PACS send of result %s failed: %s", row.id, error)
    else:
        log.info("result %s: SEG stored on the PACS", row.id)
    _finish(store, row.id, error, seg_uid)
    return get_state(store, row.id)


def _stow(settings: PacsSettings, seg: pydicom.Dataset) -> None:
    response = make_client(settings).store_instances([seg])
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        reason = failed[0].get("FailureReason")
        code = f" (failure reason 0x{int(reason):04X})" if reason is not None else ""
        raise PacsError(f"The PACS at {settings.url} refused the SEG{code}.")


@dataclass
class Sender:
    """Sends in the background, one at a time per process."""

    store: Store
    settings: PacsSettings
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def queue(self, row: ResultRow) -> None:
        """Record that ``row`` must be sent, then send it on the background thread."""
        _mark_queued(self.store, row)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pacs-send")
            self._pool.submit(self._run, row.id, row.owner)

    def _run(self, result_id: str, owner: str) -> None:
        row = self.store.get(result_id, owner)
        if row is not None:
            send_result(self.store, self.settings, row)

    def resume(self) -> int:
        """Queue every unfinished send (at start-up); returns how many."""
        pending = unfinished(self.store)
        for result_id, owner in pending:
            row = self.store.get(result_id, owner)
            if row is not None:
                self.queue(row)
        return len(pending)

    def wait(self, timeout: float = 60.0) -> None:
        """Block until the queued sends are done (tests, command line)."""
        with self._lock:
            pool = self._pool
        if pool is not None:
            pool.submit(lambda: None).result(timeout)


def after_new_result(app, row: ResultRow) -> None:
    """Hook for every new result: queue its SEG for the PACS when autosend is on."""
    settings: PacsSettings = app.extensions["pneumo.pacs"]
    if settings.configured and settings.autosend and row.source_format == "DICOM":
        app.extensions["pneumo.pacs_sender"].queue(row)


# -- pulling -------------------------------------------------------------------

@dataclass
class StudyHit:
    """One study found on the PACS."""

    study_uid: str
    patient_id: str
    patient_name: str
    accession: str
    date: str
    description: str
    modalities: list[str]
    instances: int | None

    @property
    def is_chest_radiograph(self) -> bool:
        """True for a CR/DX series of the chest (or with no body part stated)."""
        return not self.modalities or bool(CHEST_MODALITIES & set(self.modalities))


def _json_value(item: dict, tag: str, default=""):
    values = item.get(tag, {}).get("Value") or []
    if not values:
        return default
    value = values[0]
    if isinstance(value, dict):  # PN
        return value.get("Alphabetic", default)
    return value


def _dicom_date_range(date_from: str, date_to: str) -> str | None:
    """ISO dates (``YYYY-MM-DD``) to a DICOM date range match (``YYYYMMDD-YYYYMMDD``)."""
    a, b = (d.replace("-", "").strip() for d in (date_from or "", date_to or ""))
    for d in (a, b):
        if d and not (len(d) == 8 and d.isdigit()):
            raise ValueError(f"A study date must look like 2024-01-31, got {d!r}.")
    if not a and not b:
        return None
    return a if a == b else f"{a}-{b}"


def search_studies(settings: PacsSettings, patient_id: str = "", accession: str = "",
                   date_from: str = "", date_to: str = "", limit: int = 50) -> list[StudyHit]:
    """QIDO-RS study search. Raises :class:`PacsError` with a message for the page."""
    filters = {}
    if patient_id.strip():
        filters["PatientID"] = patient_id.strip()
    if accession.strip():
        filters["AccessionNumber"] = accession.strip()
    date = _dicom_date_range(date_from, date_to)
    if date:
        filters["StudyDate"] = date
    try:
        found = make_client(settings).search_for_studies(
            search_filters=filters, limit=limit,
            fields=["ModalitiesInStudy", "NumberOfStudyRelatedInstances", "StudyDescription"])
    except PacsError:
        raise
    except Exception as exc:  # noqa: BLE001 - shown on the page
        raise PacsError(describe_failure(exc, settings)) from None
    hits = [StudyHit(
        study_uid=_json_value(s, "0020000D"), patient_id=_json_value(s, "00100020"),
        patient_name=str(_json_value(s, "00100010")), accession=_json_value(s, "00080050"),
        date=_json_value(s, "00080020"), description=_json_value(s, "00081030"),
        modalities=list(s.get("00080061", {}).get("Value") or []),
        instances=_json_value(s, "00201208", None)) for s in found]
    return [h for h in hits if h.study_uid]


@dataclass
class PullOutcome:
    """Results and errors of importing studies from the PACS."""
    results: list = field(default_factory=list)   # (display name, ResultRow)
    errors: list = field(default_factory=list)    # dicts: file, code, message, status


def _instance_name(ds: pydicom.Dataset) -> str:
    date = str(ds.get("StudyDate", "") or "")
    iso = f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 else "no date"
    parts = [f"PACS study {iso}", str(ds.get("Modality", "") or ""),
             str(ds.get("ViewPosition", "") or "")]
    return " ".join(p for p in parts if p) + f" #{ds.get('InstanceNumber', '') or ''}"


def _to_bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def pull_study(settings: PacsSettings, study_uid: str, owner: str, predictor, store: Store,
               max_pixels: int, max_files: int) -> PullOutcome:
    """Fetch a study's X-rays (WADO-RS, as stored) and analyse each like an upload.

    SEG, SR and other non-image series are skipped. Raises :class:`PacsError`
    when the PACS cannot be searched or the study is unknown.
    """
    client = make_client(settings)
    try:
        listed = client.search_for_instances(
            study_instance_uid=study_uid, fields=["Modality", "SOPClassUID"])
    except Exception as exc:  # noqa: BLE001
        raise PacsError(describe_failure(exc, settings)) from None
    wanted = [(i, _json_value(i, "0020000E"), _json_value(i, "00080018")) for i in listed
              if _json_value(i, "00080060") not in NON_IMAGE_MODALITIES]
    if not listed:
        raise PacsError(f"The PACS has no study {study_uid}.")
    outcome = PullOutcome()
    if len(wanted) > max_files:
        outcome.errors.append({"file": None, "code": "too_many_files", "status": 413,
                               "message": f"The study holds {len(wanted)} images; at most "
                                          f"{max_files} can be analysed at once."})
        return outcome
    for _item, series_uid, sop_uid in wanted:
        try:
            ds = client.retrieve_instance(study_uid, series_uid, sop_uid,
                                          media_types=(("application/dicom", "*"),))
        except Exception as exc:  # noqa: BLE001
            outcome.errors.append({"file": sop_uid, "code": "pacs_error", "status": 502,
                                   "message": describe_failure(exc, settings)})
            continue
        name = _instance_name(ds)
        try:
            row = service.analyse_upload(_to_bytes(ds), owner, predictor, store, max_pixels)
        except PneumoError as exc:
            outcome.errors.append({"file": name, "code": exc.code, "status": exc.http_status,
                                   "message": str(exc)})
            continue
        log.info("result %s stored from the PACS (%s)", row.id, row.verdict)
        outcome.results.append((name, row))
    return outcome


# -- app wiring and pages --------------------------------------------------------

def init_app(app) -> None:
    """Read the settings, create the table, register the pages, resume unfinished sends."""
    settings = PacsSettings.from_config(app.config)
    store: Store = app.extensions["pneumo.store"]
    with store.connect() as db:
        db.executescript(SCHEMA)
    sender = Sender(store, settings)
    app.extensions["pneumo.pacs"] = settings
    app.extensions["pneumo.pacs_sender"] = sender
    app.jinja_env.globals["pacs_send_state"] = lambda result_id: get_state(store, result_id)
    app.jinja_env.globals["pacs_configured"] = settings.configured
    app.register_blueprint(bp)
    if settings.configured:
        n = sender.resume()
        if n:
            log.info("resuming %d unfinished PACS sends", n)


def _settings() -> PacsSettings:
    return current_app.extensions["pneumo.pacs"]


def _sender() -> Sender:
    return current_app.extensions["pneumo.pacs_sender"]


@bp.before_app_request
def _retry_on_view():
    """Viewing a result whose send failed (or never finished) retries it in the background."""
    if request.endpoint != "views.result" or not _settings().configured:
        return None
    from app import views
    state = get_state(views.store(), (request.view_args or {}).get("result_id", ""))
    if state is None or state.state == "sent":
        return None
    waited = time.time() - state.updated
    due = (state.state == "failed" and waited >= _settings().retry_after_s) or \
          (state.state == "queued" and waited >= _settings().retry_after_s) or \
          (state.state == "sending" and waited >= STALE_SENDING_S)
    if due:
        row = views.store().get(state.result_id, views.current_owner())
        if row is not None:
            _sender().queue(row)
    return None


def _own_dicom_result(result_id: str) -> ResultRow:
    from app import views
    row = views.store().get(result_id, views.current_owner())
    if row is None:
        abort(404)
    if row.source_format != "DICOM":
        abort(404, description="Only DICOM results have a DICOM Segmentation to send.")
    return row


@bp.post("/results/<result_id>/pacs/send")
def send(result_id: str):
    """Send (or resend, or retry) now and show the outcome on the result page."""
    row = _own_dicom_result(result_id)
    if not _settings().configured:
        abort(409, description="No PACS is configured (PNEUMO_DICOMWEB_URL).")
    from app import views
    state = send_result(views.store(), _settings(), row)
    if state.state == "sent":
        flash("The DICOM Segmentation was stored on the PACS.")
    elif state.state == "failed":
        flash(f"Sending to the PACS failed: {state.last_error} It will be retried.")
    else:
        flash("The result is being sent to the PACS.")
    return redirect(url_for("views.result", result_id=row.id), 303)


@bp.get("/results/<result_id>/pacs")
def send_state(result_id: str):
    """The send state as JSON (the result page polls it while a send is under way)."""
    row = _own_dicom_result(result_id)
    from app import views
    state = get_state(views.store(), row.id)
    return jsonify(state.to_dict() if state else {"state": "not sent"})


@bp.get("/pacs")
def search():
    """The "From PACS" page: a study search; chosen studies are imported."""
    settings = _settings()
    query = {k: request.args.get(k, "").strip()[:64]
             for k in ("patient_id", "accession", "date_from", "date_to")}
    chest_only = request.args.get("all") != "1"
    hits, error = None, None
    if settings.configured and (any(query.values()) or request.args.get("search")):
        try:
            hits = search_studies(settings, **query)
        except (PacsError, ValueError) as exc:
            error = str(exc)
        else:
            if chest_only:
                hits = [h for h in hits if h.is_chest_radiograph]
    return render_template("pacs.html", configured=settings.configured, query=query,
                           hits=hits, error=error, chest_only=chest_only), \
        (502 if error else 200)


@bp.post("/pacs/import")
def import_studies():
    """POST /pacs/import: pull the chosen studies and analyse them."""
    from app import views
    settings = _settings()
    if not settings.configured:
        abort(409, description="No PACS is configured (PNEUMO_DICOMWEB_URL).")
    uids = [u for u in request.form.getlist("study") if u][:5]
    if not uids:
        abort(400, description="Choose at least one study to import.")
    outcome = views.UploadOutcome([], [])
    for uid in uids:
        try:
            pulled = pull_study(settings, uid, views.current_owner(), views.predictor(),
                                views.store(), current_app.config["MAX_IMAGE_PIXELS"],
                                int(current_app.config["MAX_FILES"]))
        except PacsError as exc:
            outcome.errors.append({"file": uid, "code": exc.code, "status": exc.http_status,
                                   "message": str(exc)})
            continue
        outcome.results += pulled.results
        outcome.errors += pulled.errors
    for _name, row in outcome.results:
        after_new_result(current_app, row)
    if len(outcome.results) == 1 and not outcome.errors:
        return redirect(url_for("views.result", result_id=outcome.results[0][1].id), 303)
    status = 200 if outcome.results else views.error_status(outcome.errors)
    return render_template("upload_summary.html", outcome=outcome), status
