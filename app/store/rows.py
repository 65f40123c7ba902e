"""A result as a database row and back, and which results a caller may read: shared by
the rooms that return results (:mod:`app.store.results`, :mod:`app.store.reviews`)."""

from __future__ import annotations

import json
from typing import Mapping

from app.store.records import FIELDS, ResultRow, Scope


def to_sql(row: ResultRow) -> dict:
    """The column values of ``row`` (JSON fields as text, booleans as 0/1)."""
    values = {}
    for f in FIELDS:
        v = getattr(row, f.name)
        values[f.name] = json.dumps(v) if f.kind == "json" else int(v) if f.kind == "bool" else v
    return values


def from_sql(r: Mapping) -> ResultRow:
    """The result a ``results`` row holds."""
    values = {}
    for f in FIELDS:
        v = r[f.name]
        values[f.name] = json.loads(v) if f.kind == "json" else bool(v) if f.kind == "bool" else v
    return ResultRow(**values)


def visible(scope: "str | Scope | None") -> tuple[str, dict]:
    """The condition (and its parameters) of the results ``scope`` may read (``None``:
    every result, for the operator's commands)."""
    if scope is None:
        return "1 = 1", {}
    scope = Scope.of(scope)
    if scope.team_id is None:
        return "owner = :owner", {"owner": scope.owner}
    return "(owner = :owner OR team_id = :team)", {"owner": scope.owner, "team": scope.team_id}
