"""Sending results to the PACS: each DICOM result's SEG is stored there (STOW-RS).

Every send is a row of the send queue in the store (queued, sending, sent, failed
with the reason and when it is due again), so nothing is dropped and the back-off
survives restarts. Who drains the queue is ``PNEUMO_DICOMWEB_SENDER``:

* ``web`` (one machine, the default on the embedded database): a background thread
  in each web worker sends what its worker queued, and unfinished sends at start;
* ``worker`` (several nodes, the default on PostgreSQL): the web workers only
  enqueue; ``pneumo pacs worker`` (:func:`run_worker`, one or more, on any machine)
  claims due sends with ``FOR UPDATE SKIP LOCKED``, so no SEG is sent twice at once.

A failure is shown on the result page and tried again after a back-off that
doubles from ``PNEUMO_DICOMWEB_RETRY_AFTER`` (at most an hour), on the next view of
that page, by the *Retry now* button and by ``pneumo pacs retry``. The SEG's UIDs
derive from the result id, so a resend replaces, never duplicates.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from app import renditions
from app.pacs.client import PacsError, describe_failure, store_objects
from app.settings import PacsSettings
from app.store.database import StoreProblem
from app.store.records import ResultRow, SendState
from app.store.repository import Store

log = logging.getLogger(__name__)

#: A send still "sending" after this long died with its process; it may be claimed again.
STALE_SENDING_S = 600.0


def send_result(store: Store, settings: PacsSettings, row: ResultRow) -> SendState:
    """Store the result's SEG on the PACS now (STOW-RS) and record the outcome.

    Returns the state after the attempt (``sent`` or ``failed`` with the reason;
    unchanged when another sender holds it). Never raises for PACS failures.
    """
    if row.source_format != "DICOM":
        raise PacsError("Only DICOM results have a DICOM Segmentation to send.")
    if not store.sends.claim(row.id, row.owner, STALE_SENDING_S):
        return store.sends.state(row.id)
    return _send_claimed(store, settings, row)


def _send_claimed(store: Store, settings: PacsSettings, row: ResultRow) -> SendState:
    """Send a result whose send this process has claimed; record the outcome."""
    error, seg_uid = None, None
    reviews = store.reviews.for_result(row.id)
    review = reviews[0] if reviews else None  # the newest: the reader's verdict now
    try:
        objects = renditions.dicom_objects(store.results, row, settings.objects, review)
        seg_uid = next((str(ds.SOPInstanceUID) for ds in objects if ds.Modality == "SEG"), None)
        store_objects(settings, objects)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
        error = describe_failure(exc, settings)
        log.warning("PACS send of result %s failed: %s", row.id, error)
    else:
        log.info(
            "result %s: %s stored on the PACS%s",
            row.id,
            ", ".join(k.upper() for k in settings.objects),
            " with the newest review" if review else "",
        )
    store.sends.finish(row.id, error, seg_uid, settings.retry_after_s)
    outcome = "sent" if error is None else "failed"
    if review is not None:
        outcome += f" (with the review by {review.reviewer_name})"
    store.audit.record("pacs-sender", "send", row.id, None, row.team_id, outcome)
    return store.sends.state(row.id)


def due(state: SendState | None, settings: PacsSettings, now: float) -> bool:
    """True when an unfinished send should be tried again now."""
    if state is None or state.state == "sent":
        return False
    waited = now - state.updated
    if state.state == "sending":
        return waited >= STALE_SENDING_S
    if state.next_attempt is not None:
        return now >= state.next_attempt
    return waited >= settings.retry_after_s


def drain(store: Store, settings: PacsSettings, limit: int = 20) -> int:
    """Claim up to ``limit`` due sends and send them; returns how many were tried."""
    claimed = store.sends.claim_due(limit, STALE_SENDING_S)
    for result_id, owner in claimed:
        row = store.results.get(result_id, owner)
        if row is None:  # deleted meanwhile
            continue
        _send_claimed(store, settings, row)
    return len(claimed)


def run_worker(
    store: Store,
    settings: PacsSettings,
    poll_s: float = 2.0,
    stop: threading.Event | None = None,
    once: bool = False,
) -> int:
    """``pneumo pacs worker``: drain the send queue until ``stop`` is set (or, with
    ``once``, until nothing is due). While the database cannot be reached it waits and
    tries again. Returns how many sends were tried."""
    stop = stop or threading.Event()
    tried, unavailable = 0, False
    while not stop.is_set():
        try:
            n = drain(store, settings)
        except (StoreProblem, OSError) as exc:
            if not unavailable:
                log.warning(
                    "PACS worker: the results database cannot be used (%s); waiting",
                    type(exc).__name__,
                )
            unavailable, n = True, 0
        else:
            if unavailable:
                log.info("PACS worker: the results database answers again")
            unavailable = False
        tried += n
        if once and n == 0 and not unavailable:
            break
        if n == 0:
            stop.wait(poll_s)
    return tried


class Sender:
    """The web workers' side of the queue: enqueue, and (``mode="web"``) send in the
    background, one at a time per process."""

    def __init__(self, store: Store, settings: PacsSettings, mode: str = "web"):
        self.store = store
        self.settings = settings
        #: ``"web"``: this process sends too; ``"worker"``: ``pneumo pacs worker`` does.
        self.mode = mode
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def queue(self, row: ResultRow) -> None:
        """Record that ``row`` must be sent now; in ``web`` mode, send it on the
        background thread."""
        self.store.sends.queue(row.id, row.owner)
        if self.mode != "web":
            return
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pacs-send")
            self._pool.submit(self._run, row.id, row.owner)

    def _run(self, result_id: str, owner: str) -> None:
        row = self.store.results.get(result_id, owner)
        if row is not None:
            send_result(self.store, self.settings, row)

    def autosend(self, row: ResultRow) -> None:
        """The service's ``on_result`` hook: queue a new DICOM result's SEG when
        ``PNEUMO_DICOMWEB_AUTOSEND`` is on."""
        if self.settings.configured and self.settings.autosend and row.source_format == "DICOM":
            self.queue(row)

    def reviewed(self, row: ResultRow) -> bool:
        """A review of ``row`` was saved: queue it for the PACS (the model's objects again,
        which replace themselves, and the reviewer's) when the PACS has, or will be sent,
        the model's: autosend on, or the result queued or sent before. Returns whether it
        was queued."""
        if not self.settings.configured or row.source_format != "DICOM":
            return False
        if not (self.settings.autosend or self.store.sends.state(row.id) is not None):
            return False
        self.queue(row)
        return True

    def unfinished(self) -> list[tuple[str, str]]:
        """``(result_id, owner)`` of the sends not yet done, oldest first."""
        return self.store.sends.unfinished(STALE_SENDING_S)

    def resume(self) -> int:
        """Queue every unfinished send (at start-up, ``web`` mode); returns how many."""
        if self.mode != "web":
            return 0
        pending = self.unfinished()
        for result_id, owner in pending:
            row = self.store.results.get(result_id, owner)
            if row is not None:
                self.queue(row)
        return len(pending)

    def wait(self, timeout: float = 60.0) -> None:
        """Block until the queued sends are done (tests, command line)."""
        with self._lock:
            pool = self._pool
        if pool is not None:
            pool.submit(lambda: None).result(timeout)
