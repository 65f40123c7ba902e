"""The work behind an upload, as plain objects testable without HTTP.

:class:`Analyser` is the one service every entry point calls (the upload form,
the JSON API, the DICOMweb receiver, the PACS import, the command line):
``analyse_many`` analyses each file, turns every failure of one file into a
:class:`Refusal` with a message (never losing the other files), records a
batch, and hands each stored result to the ``on_result`` hooks (the PACS
sender). ``analyse_one`` reads the bytes, runs the model, writes the few files
every later view is made from and commits the result to the store
(``pixels.npy``: the X-ray as displayed; ``prob.png``: the probability map at
the model's resolution; ``mask_rle.txt``; ``source.dcm`` for DICOM uploads).
Everything else is rendered later from those (:mod:`app.renditions`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import re
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from pneumo.errors import PneumoError
from pneumo.inference.laterality import patient_side
from pneumo.inference.postprocess import review_band
from pneumo.io import rle
from pneumo.io.dicomguard import read_dataset
from pneumo.io.imaging import ImageRecord, declared_pixels, read_image
from pneumo.io.seg import invalid_copied_values

from app.renditions import png_bytes, thumbnail
from app.store.files import Staged
from app.store.records import ReadRow, ResultRow, instance_key, new_id, search_text
from app.store.database import StoreProblem
from app.store.repository import Store
from app.store.results import Results

if TYPE_CHECKING:  # types only: the service needs none of these at run time
    from pneumo.inference.predictor import Prediction, Predictor
    from pneumo.inference.reads import Read

log = logging.getLogger(__name__)


def write_upload_files(
    staged: Staged, pixels: np.ndarray, prob: np.ndarray, encoded_mask: str, mask: np.ndarray
) -> None:
    """The files written while the uploader waits (a few milliseconds), the worklist's
    thumbnail among them."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(pixels, np.uint8))
    staged.put("pixels.npy", buf.getvalue())
    prob_u8 = np.round(np.clip(prob, 0.0, 1.0) * 255).astype(np.uint8)
    staged.put("prob.png", png_bytes(prob_u8))
    staged.put("mask_rle.txt", (encoded_mask + "\n").encode())
    staged.put("thumb.jpg", thumbnail(pixels, mask))


#: The owner of a one-off API call (no token, no session cookie): nobody could ever read
#: its result again, so it is analysed and answered but not stored.
ONE_OFF = "oneoff:"


def analyse_one(
    data: bytes,
    owner: str,
    predictor: Predictor,
    results: Results,
    max_pixels: int,
    file_name: str = "",
    batch: str = "",
    link_duplicates: bool = True,
) -> ResultRow:
    """Read, predict, render and store one uploaded file (a one-off caller's,
    :data:`ONE_OFF`, is only answered: nothing of it is kept). With ``link_duplicates``,
    a file that ``owner`` or its team uploaded before (the same bytes or the same DICOM
    instance) raises :class:`Duplicate` before the model runs.

    ``file_name`` is the uploader's own name for the file, kept in the row for
    its owner's worklist (never logged, never used on disk).

    Raises:
        PneumoError: the file is not a usable image (nothing is stored).
    """
    t0 = time.perf_counter()
    record = read_image(data, max_pixels=max_pixels)
    kept = not owner.startswith(ONE_OFF)
    digest = hashlib.sha256(data).hexdigest() if kept else ""
    key = instance_key(record.identifiers.to_dict()) if kept else ""
    first = results.first_copy(owner, digest, key) if kept and link_duplicates else None
    if first is not None:
        raise Duplicate(first)
    t1 = time.perf_counter()
    pred = predictor.predict(record)
    t2 = time.perf_counter()
    side = patient_side(pred.mask, record.meta)
    result_id = new_id()
    if not kept:
        timings = {"decode_s": t1 - t0, **pred.timings, "predict_total_s": t2 - t1}
        return result_row(
            pred,
            predictor,
            record,
            result_id=result_id,
            owner=owner,
            meta=record.meta.to_dict(),
            side=side.to_dict(),
            mask_rle=rle.encode(pred.mask),
            timings=timings,
            file_name=file_name,
            batch=batch,
        )
    staged = results.stage(result_id)
    try:
        encoded = rle.encode(pred.mask)
        write_upload_files(
            staged,
            record.pixels,
            pred.heat_map if pred.heat_map is not None else pred.probability_map,
            encoded,
            pred.mask,
        )
        meta = record.meta.to_dict()
        if record.meta.format == "DICOM":
            staged.put("source.dcm", data)
            note = seg_note(data)
            if note:
                meta["seg_note"] = note
        t3 = time.perf_counter()
        timings = {
            "decode_s": t1 - t0,
            **pred.timings,
            "predict_total_s": t2 - t1,
            "store_s": t3 - t2,
        }
        row = result_row(
            pred,
            predictor,
            record,
            result_id=result_id,
            owner=owner,
            meta=meta,
            side=side.to_dict(),
            mask_rle=encoded,
            timings=timings,
            file_name=file_name,
            batch=batch,
        )
        row.digest, row.instance_key = digest, key
        results.commit(row, staged)
    except BaseException:
        results.discard(staged)
        raise
    return row


def result_row(
    pred: Prediction,
    predictor: Predictor,
    record: ImageRecord,
    *,
    result_id: str,
    owner: str,
    meta: dict,
    side: dict,
    mask_rle: str,
    timings: dict,
    file_name: str = "",
    batch: str = "",
) -> ResultRow:
    """The stored row of one upload, made from the model's :class:`Prediction` of its
    ``record``: the verdict's fields, the model, how the verdict was made
    (:func:`operating_point_facts`) and the upload's own facts; the timings in seconds,
    rounded to 0.1 ms. ``meta`` is the image's safe metadata (plus any page note)."""
    return ResultRow(
        id=result_id,
        owner=owner,
        created=time.time(),
        source_format=record.meta.format,
        positive=pred.positive,
        probability=pred.probability,
        threshold=pred.threshold,
        area_px=pred.area_px,
        area_cm2=pred.area_cm2,
        side=side,
        meta=meta,
        identifiers=record.identifiers.to_dict(),
        model=predictor.name,
        rle=mask_rle,
        timings={k: round(v, 4) for k, v in timings.items()},
        file_name=file_name,
        probability_kind=predictor.card.probability_kind,
        operating_point=operating_point_facts(predictor, pred),
        finding_below_threshold=pred.finding_below_threshold,
        batch=batch,
        search_text=search_text(file_name, record.identifiers.to_dict()),
    )


def read_row(read: Read, created: float) -> ReadRow:
    """The stored form of a model's re-read of a stored study (``read.key``: the
    result id): the verdict's fields from the read's prediction, or its error."""
    return ReadRow(
        read.key,
        f"{read.model} ({read.model_version or '?'})",
        created,
        read.probability,
        read.positive,
        read.threshold,
        read.area_px,
        read.rle,
        None if read.ok else read.error,
    )


def seg_note(data: bytes) -> str | None:
    """What the result page says when the DICOM Segmentation must leave out values of the
    source (names of attributes only: their values may identify the patient). The header
    is read as every reader reads it (:func:`pneumo.io.dicomguard.read_dataset`); where
    that refuses it, there is no note."""
    try:
        header = read_dataset(data, stop_before_pixels=True)
    except PneumoError:  # read_image has read it already: this only guards a change
        return None
    bad = invalid_copied_values(header)
    if not bad:
        return None
    names = ", ".join(re.sub(r"(?<!^)(?=[A-Z])", " ", k) for k in bad)
    return (
        f"The DICOM Segmentation leaves out {names}: the source's values are not valid "
        "DICOM (dates, times or codes in another form)."
    )


def operating_point_facts(predictor: Predictor, pred: Prediction) -> dict:
    """What the result page says about how the verdict was made, stored with the row.

    ``threshold`` and ``review_band`` are on the shown probability's scale (re-based
    to the site's prevalence where ``PNEUMO_PREVALENCE`` is set); ``heat_scale`` is
    the factor the heat map's pixel probabilities were multiplied by, so the
    legend can mark where the mask threshold falls on it; ``size_note``, only for a film
    under the model's working resolution, says that it was enlarged before reading.
    """
    card = predictor.card
    facts = dict(
        pred.operating_point.to_dict(),
        mask_threshold=predictor.pp.pixel_threshold,
        split=card.calibration.fitted_on if card.calibration else "tune",
        calibrated_at=card.calibrated_at,
        site_prevalence=predictor.prevalence,
        heat_scale=pred.probability if card.calibration is not None else 1.0,
        threshold=pred.threshold,
        calibrated_threshold=pred.operating_point.threshold,
        by_source=card.source_figures(pred.operating_point.name),
    )
    band = review_band(card.operating_points, pred.operating_point, card.review_floor)
    if band is not None:
        facts["review_band"] = [predictor.shown(band[0]), predictor.shown(band[1])]
    if pred.size_note:
        facts["size_note"] = pred.size_note
    return facts


# -- the service every entry point calls -------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """A file that was not analysed, with the reason in words for the person who sent it."""

    file: str | None  # the sender's name for it (None: the whole request)
    code: str  # machine-readable (the API's error code)
    status: int  # the HTTP status it alone would get
    message: str
    error: PneumoError | None = None  # the reason as raised, where there was one

    def to_dict(self) -> dict:
        """The API's form of a refusal."""
        return {"file": self.file, "code": self.code, "message": self.message}


#: Refusal codes of failures that are not about the file.
STORAGE_UNAVAILABLE = "storage_unavailable"
INTERNAL_ERROR = "internal_error"
BUSY = "busy"


@dataclass(frozen=True)
class Item:
    """One file to analyse: its display name and its bytes (or a function that fetches
    them, so that a slow source such as a PACS is read one file at a time)."""

    name: str
    data: bytes | Callable[[], bytes]
    keep_name: bool = True  # kept in the result for its owner's worklist

    def read(self) -> bytes:
        """The file's bytes."""
        return self.data() if callable(self.data) else self.data


@dataclass
class UploadOutcome:
    """What came of one request: each file in order, stored (a row) or refused."""

    entries: list[tuple[str, ResultRow | Refusal]] = field(default_factory=list)
    batch: str | None = None  # the batch id when several files came at once
    refused_request: Refusal | None = None  # the whole request was refused
    #: ids of results that were already stored: a file uploaded again links to its first copy
    repeated: set[str] = field(default_factory=set)

    @property
    def results(self) -> list[tuple[str, ResultRow]]:
        """``(name, row)`` of the stored results."""
        return [(n, r) for n, r in self.entries if isinstance(r, ResultRow)]

    @property
    def errors(self) -> list[Refusal]:
        """The refused files (and the refused request)."""
        refused = [r for _, r in self.entries if isinstance(r, Refusal)]
        return ([self.refused_request] if self.refused_request else []) + refused

    @property
    def status(self) -> int:
        """The HTTP status of a request none of whose files was stored (else 200)."""
        if self.results:
            return 200
        return max((e.status for e in self.errors), default=400)

    def merge(self, other: "UploadOutcome") -> None:
        """Add another request's files (several PACS studies imported at once)."""
        self.entries += other.entries
        self.repeated |= other.repeated
        if other.refused_request:
            self.entries.append((other.refused_request.file or "", other.refused_request))


def refusal(name: str | None, exc: BaseException) -> Refusal:
    """The refusal of a file whose analysis raised ``exc``."""
    if isinstance(exc, StoreProblem):
        return Refusal(name, exc.code, exc.http_status, str(exc))
    if isinstance(exc, PneumoError):
        return Refusal(name, exc.code, exc.http_status, str(exc), exc)
    if isinstance(exc, OSError):
        return Refusal(
            name,
            STORAGE_UNAVAILABLE,
            503,
            "The server could not store the result (disk full or not writable). Try again later.",
        )
    return Refusal(
        name,
        INTERNAL_ERROR,
        500,
        "The analysis failed on the server; nothing was stored for this file.",
    )


def uploaded_items(files) -> list[Item]:
    """The chosen files of a form or API upload (werkzeug ``FileStorage``), each read
    when its turn comes."""
    return [
        Item(display_name(f.filename), f.read) for f in files if f and (f.filename or "").strip()
    ]


def display_name(filename: str | None) -> str:
    """Client file name for display to its uploader only: base name, trimmed."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    return name[:100] or "unnamed file"


#: What a page says of a file that was uploaded before.
REPEATED = "uploaded before: not analysed again, its first result is kept"


class Duplicate(Exception):
    """The file, or the same DICOM instance, was uploaded before by the same uploader or
    its team: ``first`` is that result, and nothing new is stored."""

    def __init__(self, first: ResultRow):
        super().__init__("uploaded before")
        self.first = first


class Busy(Exception):
    """The image does not fit in this process's pixels in flight now."""


class Analyser:
    """Analyses files for an owner and stores the results.

    Args:
        store: where results go (its results and batches).
        predictor: returns the loaded model (it may wait while the model loads).
        max_pixels: the decompression-bomb guard of one image.
        max_files: the most files one request may analyse.
    """

    def __init__(
        self,
        store: Store,
        predictor: Callable[[], Predictor],
        max_pixels: int,
        max_files: int,
        max_request_pixels: int | None = None,
        max_pixels_in_flight: int | None = None,
        link_duplicates: bool = True,
    ):
        self.results = store.results
        self.batches = store.batches
        self._predictor = predictor
        self.max_pixels = max_pixels
        self.max_files = max_files
        self.max_request_pixels = max_request_pixels or max_files * max_pixels
        self.max_pixels_in_flight = max_pixels_in_flight or 2 * max_pixels
        self.link_duplicates = link_duplicates
        self._in_flight = 0  # pixels of the images this process is analysing now
        self._lock = threading.Lock()
        self._on_result: list[Callable[[ResultRow], None]] = []

    def on_result(self, hook: Callable[[ResultRow], None]) -> None:
        """Call ``hook`` with every result stored from now on (after it is committed)."""
        self._on_result.append(hook)

    def analyse_one(
        self, data: bytes, owner: str, file_name: str = "", batch: str = ""
    ) -> ResultRow:
        """Analyse and store one file; raises what :func:`analyse_one` raises. The
        ``on_result`` hooks are not called (see :meth:`analyse_many`)."""
        return analyse_one(
            data,
            owner,
            self._predictor(),
            self.results,
            self.max_pixels,
            file_name=file_name,
            batch=batch,
            link_duplicates=self.link_duplicates,
        )

    @contextlib.contextmanager
    def _pixels_in_flight(self, n: int) -> Iterator[None]:
        """Hold ``n`` pixels of this process's budget while an image is analysed; raises
        :class:`Busy` when they do not fit beside the images under way (a lone image
        always fits), so memory stays bounded whatever arrives at once."""
        with self._lock:
            if self._in_flight and self._in_flight + n > self.max_pixels_in_flight:
                raise Busy()
            self._in_flight += n
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= n

    def analyse_many(
        self, items: Iterable[Item], owner: str, as_batch: bool = False, source: str = "upload"
    ) -> UploadOutcome:
        """Analyse every file; one bad file never loses the others.

        Each failure becomes a :class:`Refusal`: the file's own problem
        (:class:`PneumoError`, with its code and status), a storage failure
        (503) or anything unexpected (500, logged without patient data). With
        ``as_batch`` and more than one file, the files form a batch (its page
        lists them with the refusals). ``source`` names the entry point in the log.
        """
        items = list(items)
        outcome = UploadOutcome()
        if not items:
            outcome.refused_request = Refusal(
                None,
                "no_file",
                400,
                "No file was chosen. Pick one or more DICOM, PNG or JPEG chest X-rays.",
            )
            return outcome
        if len(items) > self.max_files:
            outcome.refused_request = Refusal(
                None,
                "too_many_files",
                413,
                f"{len(items)} files were sent; at most {self.max_files} can be analysed at once.",
            )
            return outcome
        kept = not owner.startswith(ONE_OFF)
        outcome.batch = new_id() if as_batch and kept and len(items) > 1 else None
        if outcome.batch:  # first: a worker killed mid-batch leaves a batch page for what it stored
            self.batches.add(outcome.batch, owner, len(items), [])
        used = 0  # pixels of this request analysed so far
        for item in items:
            try:
                data = item.read()
                declared = declared_pixels(data) or 0
                if declared <= self.max_pixels and used + declared > self.max_request_pixels:
                    outcome.entries.append(
                        (
                            item.name,
                            Refusal(
                                item.name,
                                "request_too_large",
                                413,
                                "The files of this upload hold "
                                f"more than {self.max_request_pixels:,} pixels together; send this "
                                "one in another upload.",
                            ),
                        )
                    )
                    continue
                used += declared  # decoding costs the same whether or not a result comes of it
                with self._pixels_in_flight(min(declared, self.max_pixels)):
                    row = self.analyse_one(
                        data,
                        owner,
                        file_name=item.name if item.keep_name else "",
                        batch=outcome.batch or "",
                    )
            except Duplicate as again:
                log.info("%s: a file uploaded before, result %s", source, again.first.id)
                outcome.entries.append((item.name, again.first))
                outcome.repeated.add(again.first.id)
                continue
            except Busy:
                log.info("%s refused: busy", source)
                outcome.entries.append(
                    (
                        item.name,
                        Refusal(
                            item.name,
                            BUSY,
                            503,
                            "The server is analysing as many large images as "
                            "its memory allows; try this one again in a few seconds.",
                        ),
                    )
                )
                continue
            except PneumoError as exc:
                log.info("%s refused: %s", source, exc.code)
                outcome.entries.append((item.name, refusal(item.name, exc)))
                continue
            except (OSError, StoreProblem) as exc:
                log.error("storage failure (%s): %s", source, type(exc).__name__)
                outcome.entries.append((item.name, refusal(item.name, exc)))
                continue
            except Exception as exc:  # noqa: BLE001 - one bad file never loses the others
                # frames only: exception messages can quote file contents (PHI)
                log.error(
                    "analysis failed (%s): %s at\n%s",
                    source,
                    type(exc).__name__,
                    "".join(traceback.format_tb(exc.__traceback__)),
                )
                outcome.entries.append((item.name, refusal(item.name, exc)))
                continue
            outcome.entries.append((item.name, row))
            if not kept:
                log.info("a one-off call from %s answered, not stored (%s)", source, row.verdict)
                continue
            log.info("result %s stored from %s (%s)", row.id, source, row.verdict)
            self._fire(row)
        again = [
            {"file": name, "message": REPEATED, "result": row.id}
            for name, row in outcome.results
            if row.id in outcome.repeated
        ]
        if outcome.batch and (outcome.errors or again):
            self.batches.set_errors(
                outcome.batch,
                [{"file": e.file, "message": e.message} for e in outcome.errors] + again,
            )
        return outcome

    def _fire(self, row: ResultRow) -> None:
        for hook in self._on_result:
            try:
                hook(row)
            except Exception as exc:  # noqa: BLE001 - a hook never loses a stored result
                log.error("a result hook failed: %s", type(exc).__name__)
