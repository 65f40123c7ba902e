"""What a worklist or an API list of results keeps, read from what the caller sent (a
query string or a form): the review state, verdict, upload days, batch, uploader and
search text, as a :class:`app.store.results.Filter`. Shared by the worklist
(:mod:`app.views`) and the API (:mod:`app.api`); no Flask.
"""

from __future__ import annotations

from typing import Callable, Mapping

from app.audit import day_start
from app.store.results import Filter

#: The longest search text (a file name or a patient's name fits).
MAX_SEARCH = 100
#: The fields a list is filtered by, as the caller names them.
FILTER_FIELDS = ("status", "verdict", "from", "to", "batch", "uploader", "q")

DAY = 86400.0


def read_filter(values: Mapping[str, str], owner_of: Callable[[str], str | None]) -> Filter:
    """The :class:`Filter` that ``values`` ask for: ``status`` (unreviewed, reviewed,
    disagreed), ``verdict`` (positive, negative), ``from`` and ``to`` (``YYYY-MM-DD``,
    both days included, UTC), ``batch``, ``uploader`` (a user name, made an owner key by
    ``owner_of``) and ``q`` (the search text); empty values are ignored.

    Raises:
        ValueError: a value that is not one of the field's, with a message for the caller.
    """

    def get(name: str) -> str:
        return str(values.get(name) or "").strip()

    since = day_start(get("from")) if get("from") else None
    until = day_start(get("to")) + DAY if get("to") else None
    if since is not None and until is not None and until <= since:
        raise ValueError("the 'to' day is before the 'from' day.")
    uploader = None
    if get("uploader"):
        uploader = owner_of(get("uploader"))
        if uploader is None:
            raise ValueError("uploader is not a user name of your team.")
    text = get("q")
    if len(text) > MAX_SEARCH:
        raise ValueError(f"the search text is longer than {MAX_SEARCH} characters.")
    return Filter(  # checks the review state and the verdict
        status=get("status") or None,
        verdict=get("verdict") or None,
        since=since,
        until=until,
        batch=get("batch") or None,
        uploader=uploader,
        text=text,
    )
