"""The audit trail as an auditor reads it: the day a query starts from, and the events as
CSV. Shared by the audit page (:mod:`app.admin`) and ``pneumo audit`` (:mod:`app.cli`);
no Flask.
"""

from __future__ import annotations

import csv
import datetime
import io


def day_start(text: str) -> float:
    """A ``YYYY-MM-DD`` date as seconds since 1970 at its start (UTC); raises ValueError
    naming the text otherwise (the audit page's ``since`` and the command line's days)."""
    try:
        day = datetime.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a date (YYYY-MM-DD): {text!r}") from None
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc).timestamp()


def events_csv(events) -> str:
    """Audit events as CSV (the page's download and ``pneumo audit``)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["id", "at_utc", "actor", "team_id", "action", "result_id", "address", "detail"]
    )
    for e in events:
        at = datetime.datetime.fromtimestamp(e.at, datetime.timezone.utc).isoformat()
        writer.writerow([e.id, at, e.actor, e.team_id, e.action, e.result_id, e.address, e.detail])
    return out.getvalue()
