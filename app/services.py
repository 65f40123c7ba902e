"""The service's objects, made once per process from the typed settings, without Flask.

:meth:`Services.from_settings` builds the store, the model holder, the analysis
service and the PACS sender, and checks the two start-up rules (a shared
database needs a shared session key; beyond loopback a login must exist). The
app factory (:func:`app.create_app`) holds one ``Services``; the command line
(:mod:`app.cli`) makes its own, with or without the model, and never builds a
Flask app to reach the store.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from app import renditions
from app.model import ModelHolder
from app.pacs.sender import Sender
from app.service import Analyser
from app.settings import Settings, SettingsError, login_problem, shared_secret_problem
from app.store.repository import Store

log = logging.getLogger(__name__)


class ConfigError(RuntimeError):
    """The configuration is unsafe or inconsistent; the service refuses to start."""


@dataclass
class Services:
    """What every request and command works with."""

    settings: Settings
    store: Store
    model: ModelHolder
    analyser: Analyser
    sender: Sender
    _renderer: ThreadPoolExecutor | None = field(default=None, repr=False)
    _renderer_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(
        cls, settings: Settings, predictor=None, load_model: bool = True
    ) -> "Services":
        """Open the store, start loading the model (in the background), make the analysis
        service and the PACS sender (hooked to new results when autosend is on).

        ``predictor``: an already loaded model (tests, benchmarks); ``load_model=False``:
        none at all, for commands that only read or send (a request for the model then
        gets :class:`app.model.ModelNotReady`).

        Raises:
            SettingsError: nodes share a database without a shared session key.
            ConfigError: the service would listen beyond loopback with no login.
            pneumo.errors.PneumoError: the model folder or its operating point is unusable.
        """
        problem = shared_secret_problem(settings)
        if problem:
            raise SettingsError(problem)
        store = Store.from_settings(settings)
        store.init()
        problem = login_problem(settings, store.accounts.count)
        if problem:
            raise ConfigError(problem)
        holder = ModelHolder(predictor)
        if predictor is None and load_model:
            holder.start(settings.model_options())
        elif predictor is None:
            holder.unavailable("this command does not load the model")
        analyser = Analyser(
            store,
            holder.get,
            settings.max_image_pixels,
            settings.max_files,
            settings.max_request_pixels,
            settings.max_pixels_in_flight,
            link_duplicates=settings.duplicates == "link",
        )
        sender = Sender(store, settings.pacs, settings.pacs_sender)
        analyser.on_result(sender.autosend)
        return cls(settings, store, holder, analyser, sender)

    def prerender(self, row) -> None:
        """Render a new result's viewer files (:data:`app.renditions.VIEWER_FILES`) in the
        background, one thread per process: the browser that uploaded it asks for them as
        soon as its page opens, and finds them made (or being made) rather than waiting
        for the first request to make them. Failures only mean they are made on request."""
        with self._renderer_lock:
            if self._renderer is None:
                self._renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render")
            self._renderer.submit(renditions.prerender, self.store.results, row)

    def resume_sends(self) -> int:
        """Queue again the PACS sends a previous process left unfinished (web workers
        that send, at start-up)."""
        if not self.settings.pacs.configured:
            return 0
        n = self.sender.resume()
        if n:
            log.info("resuming %d unfinished PACS sends", n)
        return n
