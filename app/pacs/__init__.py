"""The PACS connection over DICOMweb (``PNEUMO_DICOMWEB_*``, see :class:`app.settings.PacsSettings`).

* ``client``: the DICOMweb client (QIDO-RS search, WADO-RS fetch, STOW-RS store);
* ``sender``: a DICOM result's SEG to the PACS through a send queue in the
  store, drained in the background (web workers) or by ``pneumo pacs worker``,
  with retries until it is stored;
* ``pull``: a study's X-rays from the PACS, analysed through the service;
* ``pages``: *Send to PACS*, the send state, *From PACS*.

:func:`init_app` wires them into the app: the sender becomes the service's
``on_result`` hook (``PNEUMO_DICOMWEB_AUTOSEND``) and resumes unfinished sends.
"""
from __future__ import annotations

import logging

from app.pacs import pages
from app.pacs.sender import Sender
from app.service import Analyser
from app.settings import PacsSettings
from app.store.repository import Store

log = logging.getLogger("pneumo.app")


def init_app(app, store: Store, analyser: Analyser) -> Sender:
    """Read the settings, register the pages, hook autosend, resume unfinished sends."""
    settings = PacsSettings.from_config(app.config)
    sender = Sender(store, settings, app.config.get("DICOMWEB_SENDER") or "web")
    app.extensions["pneumo.pacs"] = settings
    app.extensions["pneumo.pacs_sender"] = sender
    analyser.on_result(sender.autosend)
    app.jinja_env.globals["pacs_send_state"] = store.sends.state
    app.jinja_env.globals["pacs_configured"] = settings.configured
    app.register_blueprint(pages.bp)
    if settings.configured:
        n = sender.resume()
        if n:
            log.info("resuming %d unfinished PACS sends", n)
    return sender
