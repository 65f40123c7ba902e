"""gunicorn's access log without forged lines, NUL bytes or Study Instance UIDs.

A request path is written by the client: ``GET /x%0aforged`` would put a line
of the client's choosing into the log, ``%00`` a NUL byte. And DICOMweb paths
carry Study/Series/SOP Instance UIDs, which identify a patient's study.
:func:`loggable_path` escapes every control character and writes the route
with ``{uid}`` in place of each UID; :class:`SafeAccessLogger` applies it to
the ``%(U)s`` and ``%(r)s`` atoms (``gunicorn.conf.py`` names it as
``logger_class``).
"""

from __future__ import annotations

import re

from gunicorn.glogging import Logger

_UID = re.compile(r"(?<=/)[0-9]+(?:\.[0-9]+){3,}(?=/|$)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def loggable_path(path: str | None) -> str:
    """``path`` with UIDs replaced by ``{uid}`` and control characters as ``\\xNN``."""
    if not path:
        return "-"
    path = _UID.sub("{uid}", path)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", path)


class SafeAccessLogger(Logger):
    """gunicorn's logger, with the request path made safe to log."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["U"] = loggable_path(atoms.get("U"))
        raw = environ.get("RAW_URI", "")
        atoms["r"] = (
            f"{environ.get('REQUEST_METHOD')} {loggable_path(raw.split('?', 1)[0])} "
            f"{environ.get('SERVER_PROTOCOL')}"
        )
        atoms["q"] = "-"  # query strings are never logged
        return atoms
