"""Storage, behind one store object (:class:`app.store.repository.Store`) made of rooms.

The rooms, one repository per kind of record over the shared database, never importing
each other: ``results`` (with their files), ``reads`` (re-reads by other models),
``batches``, ``accounts`` (users, teams, API tokens), ``sessions`` (logins),
``counters`` (rate limits; ``ratelimits`` hands them to Flask-Limiter), ``sends`` (the
PACS queue), ``reviews``, ``audit``. Below them: ``database`` (engines, transactions,
errors), ``migrations``, ``records`` (the plain records), ``rows`` (a result as a row),
``files`` (a result's files, in and out as bytes), ``credentials`` (password and token
hashing). Only this package knows there is a database or a folder.
"""
