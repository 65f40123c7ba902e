"""Sending results to the PACS: each DICOM result's SEG is stored there (STOW-RS).

The state of every send (queued, sending, sent, failed with the reason) lives in
the store, beside the results, so that nothing is dropped: a failure is shown
on the result page and retried on the next view of that page once
``PNEUMO_DICOMWEB_RETRY_AFTER`` seconds have passed, by the *Retry now* button,
for every unfinished send when the app starts, and by ``pneumo pacs retry``.
The SEG's UIDs derive from the result id, so a resend replaces, never duplicates.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from app import renditions
from app.pacs.client import PacsError, describe_failure, store_seg
from app.settings import PacsSettings
from app.store.records import ResultRow, SendState
from app.store.repository import Store

log = logging.getLogger("pneumo.app")

#: A send still "sending" after this long died with its process; it may be claimed again.
STALE_SENDING_S = 600.0


def send_result(store: Store, settings: PacsSettings, row: ResultRow) -> SendState:
    """Store the result's SEG on the PACS now (STOW-RS) and record the outcome.

    Returns the state after the attempt (``sent`` or ``failed`` with the reason;
    unchanged when another sender holds it). Never raises for PACS failures.
    """
    if row.source_format != "DICOM":
        raise PacsError("Only DICOM results have a DICOM Segmentation to send.")
    if not store.claim_send(row.id, row.owner, STALE_SENDING_S):
        return store.send_state(row.id)
    error, seg_uid = None, None
    try:
        seg = renditions.seg_dataset(store, row)
        seg_uid = str(seg.SOPInstanceUID)
        store_seg(settings, seg)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
        error = describe_failure(exc, settings)
        log.warning("PACS send of result %s failed: %s", row.id, error)
    else:
        log.info("result %s: SEG stored on the PACS", row.id)
    store.finish_send(row.id, error, seg_uid)
    return store.send_state(row.id)


def due(state: SendState | None, settings: PacsSettings, now: float) -> bool:
    """True when an unfinished send should be tried again now."""
    if state is None or state.state == "sent":
        return False
    waited = now - state.updated
    if state.state == "sending":
        return waited >= STALE_SENDING_S
    return waited >= settings.retry_after_s


class Sender:
    """Sends in the background, one at a time per process."""

    def __init__(self, store: Store, settings: PacsSettings):
        self.store = store
        self.settings = settings
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def queue(self, row: ResultRow) -> None:
        """Record that ``row`` must be sent, then send it on the background thread."""
        self.store.queue_send(row.id, row.owner)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pacs-send")
            self._pool.submit(self._run, row.id, row.owner)

    def _run(self, result_id: str, owner: str) -> None:
        row = self.store.get(result_id, owner)
        if row is not None:
            send_result(self.store, self.settings, row)

    def autosend(self, row: ResultRow) -> None:
        """The service's ``on_result`` hook: queue a new DICOM result's SEG when
        ``PNEUMO_DICOMWEB_AUTOSEND`` is on."""
        if self.settings.configured and self.settings.autosend and row.source_format == "DICOM":
            self.queue(row)

    def unfinished(self) -> list[tuple[str, str]]:
        """``(result_id, owner)`` of the sends not yet done, oldest first."""
        return self.store.unfinished_sends(STALE_SENDING_S)

    def resume(self) -> int:
        """Queue every unfinished send (at start-up); returns how many."""
        pending = self.unfinished()
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
