"""Command-line tools that need the web app (its store, settings and accounts).

``python -m app.cli pacs pull --study UID --user NAME``
    import a study from the configured PACS and analyse it (results owned by NAME);
``python -m app.cli pacs send --result ID``
    send a result's DICOM SEG to the PACS now;
``python -m app.cli pacs retry``
    send every queued or failed SEG again (e.g. from cron after a PACS outage).

They read the same ``PNEUMO_*`` settings as the server. The core command
(``pneumo``, in :mod:`pneumo.cli`) never imports the app; it can mount these
subcommands with :func:`add_app_commands`.
"""
from __future__ import annotations

import argparse
import sys


def _app(load_model: bool):
    from app import create_app
    config = {"WARM_UP": False}
    if not load_model:
        config["PREDICTOR"] = _NoModel()
    return create_app(config)


class _NoModel:
    """Stands in for the model in commands that only send."""

    name = "not loaded"


def _owner(app, username: str) -> str:
    with app.extensions["pneumo.store"].connect() as db:
        row = db.execute("SELECT id FROM users WHERE username = ?", (username,)).fetchone()
    if row is None:
        raise SystemExit(f"No user {username!r}: create one with .venv/bin/pneumo create-user "
                         f"{username}")
    return f"user:{row[0]}"


def cmd_pacs_pull(args: argparse.Namespace) -> int:
    """Import one or more studies from the PACS, analyse them, print each result."""
    from app import pacs
    app = _app(load_model=True)
    owner = _owner(app, args.user)
    settings = app.extensions["pneumo.pacs"]
    predictor = app.extensions["pneumo.model"].get()
    failures = 0
    for study in args.study:
        try:
            outcome = pacs.pull_study(settings, study, owner, predictor,
                                      app.extensions["pneumo.store"],
                                      app.config["MAX_IMAGE_PIXELS"], int(app.config["MAX_FILES"]))
        except pacs.PacsError as exc:
            print(f"{study}: ERROR {exc}", file=sys.stderr)
            failures += 1
            continue
        for name, row in outcome.results:
            pacs.after_new_result(app, row)
            print(f"{row.id}\t{row.verdict}\tprobability {row.probability:.3f}\t{name}\t"
                  f"/results/{row.id}")
        for err in outcome.errors:
            failures += 1
            print(f"{err['file'] or study}: ERROR {err['message']}", file=sys.stderr)
    app.extensions["pneumo.pacs_sender"].wait(timeout=settings.timeout * 3)
    return 1 if failures else 0


def cmd_pacs_send(args: argparse.Namespace) -> int:
    """Send one result's SEG to the PACS now."""
    from app import pacs
    app = _app(load_model=False)
    store = app.extensions["pneumo.store"]
    with store.connect() as db:
        r = db.execute("SELECT owner FROM results WHERE id = ?", (args.result,)).fetchone()
    row = store.get(args.result, r[0]) if r else None
    if row is None:
        print(f"No result {args.result}", file=sys.stderr)
        return 1
    state = pacs.send_result(store, app.extensions["pneumo.pacs"], row)
    print(f"{row.id}: {state.state}" + (f" ({state.last_error})" if state.last_error else ""))
    return 0 if state.state == "sent" else 1


def cmd_pacs_retry(args: argparse.Namespace) -> int:
    """Send every unfinished SEG again; exit 1 if any still fails."""
    from app import pacs
    app = _app(load_model=False)
    store, settings = app.extensions["pneumo.store"], app.extensions["pneumo.pacs"]
    app.extensions["pneumo.pacs_sender"].wait(timeout=settings.timeout * 3)  # start-up resume
    failed = 0
    for result_id, owner in pacs.unfinished(store):
        row = store.get(result_id, owner)
        if row is None:
            continue
        state = pacs.send_result(store, settings, row)
        failed += state.state != "sent"
        print(f"{row.id}: {state.state}" + (f" ({state.last_error})" if state.last_error else ""))
    return 1 if failed else 0


def add_app_commands(subparsers) -> None:
    """Register ``pacs pull|send|retry`` on an ``argparse`` subparsers object."""
    pacs = subparsers.add_parser("pacs", help="exchange studies and results with a PACS "
                                              "(DICOMweb; PNEUMO_DICOMWEB_URL)")
    sub = pacs.add_subparsers(dest="pacs_command", required=True)
    pull = sub.add_parser("pull", help="import a study from the PACS and analyse it")
    pull.add_argument("--study", action="append", required=True, metavar="UID",
                      help="Study Instance UID (repeat for several)")
    pull.add_argument("--user", required=True, help="the user who owns the results")
    pull.set_defaults(func=cmd_pacs_pull)
    send = sub.add_parser("send", help="send a result's DICOM SEG to the PACS now")
    send.add_argument("--result", required=True, metavar="ID")
    send.set_defaults(func=cmd_pacs_send)
    retry = sub.add_parser("retry", help="send every queued or failed SEG again")
    retry.set_defaults(func=cmd_pacs_retry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.cli", description=__doc__.split("\n")[0])
    add_app_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:  # a bad setting, named
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
