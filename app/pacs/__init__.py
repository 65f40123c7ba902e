"""The PACS connection over DICOMweb (``PNEUMO_DICOMWEB_*``, see
:class:`app.settings.PacsSettings`).

* ``client``: the DICOMweb client (QIDO-RS search, WADO-RS fetch, STOW-RS store);
* ``sender``: a DICOM result's SEG to the PACS through a send queue in the
  store, drained in the background (web workers) or by ``pneumo pacs worker``,
  with retries until it is stored;
* ``pull``: a study's X-rays from the PACS, analysed through the service;
* ``pages``: *Send to PACS*, the send state, *From PACS*.

:func:`app.pacs.pages.init_app` registers the pages; the sender itself is made and
hooked to new results (``PNEUMO_DICOMWEB_AUTOSEND``) by
:meth:`app.services.Services.from_settings`.
"""
