"""Storage, behind one repository object (:class:`app.store.repository.Store`).

``records``: the plain records kept (results with their fields defined once,
PACS send states); ``files``: a result's files, in and out as bytes;
``accounts``: password and token hashing; ``repository``: every query.
Only this package knows there is a database or a folder.
"""
