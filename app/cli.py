"""The ``pneumo`` command: the core's commands (:mod:`pneumo.cli`) plus those that
need the web app (its settings, store and accounts).

``pneumo serve``, ``pneumo purge``, ``pneumo create-user``, ``pneumo create-token``
    run the service, apply the retention period, add logins and API tokens;
``pneumo pacs pull --study UID --user NAME``
    import a study from the configured PACS and analyse it (results owned by NAME);
``python -m app.cli pacs send --result ID``
    send a result's DICOM SEG to the PACS now;
``python -m app.cli pacs retry``
    send every queued or failed SEG again (e.g. from cron after a PACS outage);
``pneumo pacs worker``
    drain the PACS send queue (``PNEUMO_DICOMWEB_SENDER=worker``; several may run).

They read the same ``PNEUMO_*`` settings as the server
(:class:`app.settings.Settings`). The core (:mod:`pneumo.cli`) never imports
the app: this module extends the core's parser.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from pneumo import paths
from pneumo.cli import build_parser as core_parser
from pneumo.cli_ml import cmd_reread as core_reread, reread_model
from pneumo.errors import PneumoError, UnsupportedImageError
from pneumo.evaluation.engines import reread

from app import renditions
from app.audit import day_start, events_csv
from app.clinical import export_reviews
from app.pacs.client import PacsError
from app.pacs.pull import pull_study
from app.pacs.sender import run_worker, send_result
from app.proxy import write_config
from app.service import read_row
from app.services import Services
from app.settings import LOG_FORMAT, Settings, without_password
from app.store import backup as store_backup
from app.store.accounts import Accounts
from app.store.database import StoreDamaged, StoreProblem
from app.store.records import ROLES, ResultRow, Scope
from app.store.repository import Store
from app.store.results import Results


def _services(load_model: bool) -> Services:
    """The service's objects for a command: the model loaded (not warmed up) only when
    the command analyses."""
    settings = replace(Settings.from_env(), warm_up=False)
    return Services.from_settings(settings, load_model=load_model)


def _owner(accounts: Accounts, username: str) -> str:
    user_id = accounts.id_of(username)
    if user_id is None:
        raise SystemExit(
            f"No user {username!r}: create one with .venv/bin/pneumo create-user {username}"
        )
    return f"user:{user_id}"


def cmd_pacs_pull(args: argparse.Namespace) -> int:
    """Import one or more studies from the PACS, analyse them, print each result."""
    services = _services(load_model=True)
    store, settings = services.store, services.settings.pacs
    owner = _owner(store.accounts, args.user)
    failures = 0
    for study in args.study:
        try:
            outcome = pull_study(settings, study, owner, services.analyser)
        except PacsError as exc:
            print(f"{study}: ERROR {exc}", file=sys.stderr)
            failures += 1
            continue
        for name, row in outcome.results:
            print(
                f"{row.id}\t{row.verdict}\tprobability {row.probability:.3f}\t{name}\t"
                f"/results/{row.id}"
            )
        for err in outcome.errors:
            failures += 1
            print(f"{err.file or study}: ERROR {err.message}", file=sys.stderr)
    services.sender.wait(timeout=settings.timeout * 3)
    return 1 if failures else 0


def cmd_pacs_send(args: argparse.Namespace) -> int:
    """Send one result's SEG to the PACS now."""
    services = _services(load_model=False)
    store = services.store
    row = store.results.get_any(args.result)
    if row is None:
        print(f"No result {args.result}", file=sys.stderr)
        return 1
    state = send_result(store, services.settings.pacs, row)
    print(f"{row.id}: {state.state}" + (f" ({state.last_error})" if state.last_error else ""))
    return 0 if state.state == "sent" else 1


def cmd_pacs_retry(args: argparse.Namespace) -> int:
    """Send every unfinished SEG again; exit 1 if any still fails."""
    services = _services(load_model=False)
    store, settings, sender = services.store, services.settings.pacs, services.sender
    sender.wait(timeout=settings.timeout * 3)  # start-up resume
    failed = 0
    for result_id, owner in sender.unfinished():
        row = store.results.get(result_id, owner)
        if row is None:
            continue
        state = send_result(store, settings, row)
        failed += state.state != "sent"
        print(f"{row.id}: {state.state}" + (f" ({state.last_error})" if state.last_error else ""))
    return 1 if failed else 0


def cmd_pacs_worker(args: argparse.Namespace) -> int:
    """Drain the PACS send queue until stopped (SIGTERM or Ctrl-C); with ``--once``,
    until nothing is due. Run one or more, on any machine that reaches the database,
    the blob store and the PACS."""
    settings = Settings.from_env()
    if not settings.pacs.configured:
        print("error: no PACS is configured (PNEUMO_DICOMWEB_URL)", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT)
    store = _open_store(str(settings.data_dir))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(
        f"PACS worker {os.getpid()}: sending SEGs from {without_password(store.db.url)} to "
        f"{settings.pacs.url}",
        flush=True,
    )
    tried = run_worker(store, settings.pacs, args.poll, stop, once=args.once)
    print(f"PACS worker {os.getpid()}: stopped after {tried} send(s)", flush=True)
    return 0


def stored_items(results: Results, rows: list[ResultRow]) -> Iterator[tuple[str, object]]:
    """``(result id, the file to read again)`` for each stored result, fetched one at a
    time as the engine asks; a result whose files are gone gives the error instead."""
    for row in rows:
        try:
            yield row.id, renditions.source_file(results, row)
        except renditions.ResultGone:
            yield row.id, UnsupportedImageError("The result's files are gone (deleted or purged).")


def cmd_reread(args: argparse.Namespace) -> int:
    """``pneumo reread``: files and folders (the core's command), or with ``--since DAY
    [--until DAY]`` the stored studies uploaded in that range; each stored study's new
    read is kept beside the first (the result), under the model's name and version, and
    a later read by the same model replaces its own."""
    if not args.since:
        if args.until:
            print("error: --until needs --since", file=sys.stderr)
            return 2
        return core_reread(args)
    if args.inputs or args.list:
        print("error: give files or --since, not both", file=sys.stderr)
        return 2
    store = _open_store(args.data_dir)
    since = day_start(args.since)
    until = day_start(args.until) + 86400 if args.until else time.time() + 1
    rows = store.results.between(since, until)
    if not rows:
        print(
            f"error: no stored studies from {args.since} to {args.until or 'now'}", file=sys.stderr
        )
        return 1
    chosen = reread_model(args)
    if chosen is None:
        return 2
    model, engine = chosen
    counts = {"studies": len(rows), "read": 0, "positive": 0, "no_verdict": 0}
    for read in reread(
        model,
        stored_items(store.results, rows),
        batch_size=args.batch_size,
        total=len(rows),
        progress="re-reading stored studies",
        **engine,
    ):
        store.reads.add(read_row(read, time.time()))
        counts["read" if read.ok else "no_verdict"] += 1
        counts["positive"] += bool(read.positive)
    print(json.dumps(counts))
    return 0 if counts["read"] else 1


def cmd_serve(args: argparse.Namespace) -> int:
    """Run gunicorn with the project's settings (a convenience wrapper)."""
    env = dict(
        os.environ,
        PNEUMO_HOST=args.host,
        PNEUMO_PORT=str(args.port),
        PNEUMO_WORKERS=str(args.workers),
    )
    if args.model:
        env["PNEUMO_MODEL_DIR"] = str(Path(args.model).resolve())
    os.chdir(paths.project_root())
    os.execvpe(
        sys.executable,
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
        env,
    )
    return 0  # pragma: no cover


def _store(data_dir: str) -> Store:
    """The settings' store (database, blob URL), its files in ``data_dir`` (``--data-dir``);
    no free-space reserve: the operator's commands only read, delete or restore."""
    settings = replace(Settings.from_env(), data_dir=Path(data_dir), min_free_mb=0)
    return Store.from_settings(settings)


def _open_store(data_dir: str) -> Store:
    store = _store(data_dir)
    store.init()
    return store


def cmd_purge(args: argparse.Namespace) -> int:
    """Delete stored results older than the retention period (rows and files together)."""
    store = _open_store(args.data_dir)
    settings = Settings.from_env()
    n = store.purge(args.days)
    store.sessions.close_expired(settings.session_days * 86400)
    events = store.audit.purge(max(settings.audit_retention_days, args.days))
    print(
        f"purged {n} result(s) older than {args.days:g} days from {args.data_dir}, and "
        f"{events} audit event(s) older than {settings.audit_retention_days:g} days"
    )
    return 0


def _new_password(args: argparse.Namespace) -> str | None:
    """One line from stdin when asked to or when stdin is not a terminal (read
    once, no prompt); else a hidden prompt asked twice. None if the two differ."""
    if args.password_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass(f"Password for {args.username}: ")
    return password if getpass.getpass("Repeat the password: ") == password else None


def cmd_create_user(args: argparse.Namespace) -> int:
    """Create a login for the web app (password from stdin or a prompt)."""
    password = _new_password(args)
    if password is None:
        print("error: the passwords do not match", file=sys.stderr)
        return 2
    try:
        store = _open_store(args.data_dir)
        accounts = store.accounts
        user = accounts.get(accounts.create(args.username, password, args.team, args.role))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"created user {user.username}: {user.role} of team {user.team}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Print the audit trail since a day, as CSV or JSON (every team's)."""
    store = _open_store(args.data_dir)
    events = store.audit.events(day_start(args.since))
    if args.format == "json":
        print(json.dumps([e.to_dict() for e in events], indent=1))
    else:
        sys.stdout.write(events_csv(events))
    return 0


def cmd_export_reviews(args: argparse.Namespace) -> int:
    """Write the reviewed studies (every team's, or one's) as training data."""
    store = _open_store(args.data_dir)
    team_id = None
    if args.team:
        members = [u for u in store.accounts.list() if u.team == args.team]
        if not members:
            print(f"error: no team {args.team!r}", file=sys.stderr)
            return 2
        team_id = members[0].team_id
    pairs = store.reviews.reviewed(
        None if team_id is None else Scope("", team_id),
        day_start(args.since) if args.since else 0.0,
    )
    counts = export_reviews(store.results, pairs, Path(args.out))
    print(json.dumps(counts))
    return 0 if counts["studies"] else 1


def cmd_create_token(args: argparse.Namespace) -> int:
    """Print a new API token for a user (shown once; only its hash is stored)."""
    try:
        print(_open_store(args.data_dir).accounts.create_token(args.username))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy the results (database and files) to a new folder while the service runs."""
    store = _store(args.data_dir)
    if not store.db.exists:
        print(f"error: no results database in {args.data_dir}", file=sys.stderr)
        return 2
    try:
        n = store_backup.backup(store, args.dest)
    except (StoreDamaged, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"backed up {n} result(s) from {args.data_dir} to {args.dest}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Put a backup in place of the results (stop the service first)."""
    try:
        n = store_backup.restore(args.source, args.data_dir)
    except StoreDamaged as exc:
        print(f"error: the backup cannot be used: {exc}", file=sys.stderr)
        return 1
    print(
        f"restored {n} result(s) from {args.source} to {args.data_dir} (the previous "
        "database files are kept beside it with a .damaged-<time> suffix)"
    )
    return 0


def cmd_proxy_config(args: argparse.Namespace) -> int:
    """Write the nginx configuration for these settings into RUN_DIR; print its path."""
    print(write_config(Settings.from_env(), args.run_dir))
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    """Print the settings the service would run with (no passwords), or one of them."""
    values = Settings.from_env().to_dict()
    if args.name:
        if args.name not in values:
            print(f"error: no setting {args.name!r} (one of {', '.join(values)})", file=sys.stderr)
            return 2
        value = values[args.name]
        print(json.dumps(value) if isinstance(value, dict) else value)
        return 0
    print(json.dumps(values, indent=2))
    return 0


def add_web_commands(subparsers, settings) -> None:
    """Register ``serve``, ``purge``, ``create-user`` and ``create-token``."""
    p = subparsers.add_parser("serve", help="start the web app with gunicorn")
    p.add_argument("--host", default=settings.host)
    p.add_argument("--port", type=int, default=settings.port)
    p.add_argument("--workers", type=int, default=settings.workers)
    p.add_argument("--model", help="model folder (default: the bundled model)")
    p.set_defaults(func=cmd_serve)

    p = subparsers.add_parser("purge", help="delete results older than the retention period")
    p.add_argument("--data-dir", default=str(settings.data_dir))
    p.add_argument(
        "--days",
        type=float,
        default=settings.retention_days,
        help="retention period (default: PNEUMO_RETENTION_DAYS or 30)",
    )
    p.set_defaults(func=cmd_purge)

    p = subparsers.add_parser("create-user", help="create a login for the web app")
    p.add_argument("username")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from stdin (implied when stdin is not a terminal)",
    )
    p.add_argument("--team", help="the user's team (made if new; default: default)")
    p.add_argument(
        "--role",
        choices=ROLES,
        help="admin (users, tokens, retention; reads and "
        "reviews), radiologist (reads and reviews the team's results) or uploader "
        "(uploads, sees only its own); default: admin for the first user, else "
        "radiologist",
    )
    p.add_argument("--data-dir", default=str(settings.data_dir))
    p.set_defaults(func=cmd_create_user)

    p = subparsers.add_parser(
        "audit",
        help="print the audit trail (who saw, downloaded, sent, deleted or reviewed which result)",
    )
    p.add_argument("--since", required=True, metavar="YYYY-MM-DD")
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument("--data-dir", default=str(settings.data_dir))
    p.set_defaults(func=cmd_audit)

    p = subparsers.add_parser(
        "export-reviews",
        help="write reviewed studies as training "
        "data: images, masks (PNG and SIIM RLE) and a labels CSV",
    )
    p.add_argument("--out", required=True, help="a folder to write into")
    p.add_argument("--team", help="one team's reviews (default: every team's)")
    p.add_argument("--since", metavar="YYYY-MM-DD", help="reviews since this day")
    p.add_argument("--data-dir", default=str(settings.data_dir))
    p.set_defaults(func=cmd_export_reviews)

    p = subparsers.add_parser("create-token", help="create an API token for a user")
    p.add_argument("username")
    p.add_argument("--data-dir", default=str(settings.data_dir))
    p.set_defaults(func=cmd_create_token)

    p = subparsers.add_parser(
        "backup",
        help="copy the results (database and files) to a new folder, while the service runs",
    )
    p.add_argument("dest", help="a new folder for the backup")
    p.add_argument("--data-dir", default=str(settings.data_dir))
    p.set_defaults(func=cmd_backup)

    p = subparsers.add_parser(
        "restore", help="replace the results by a backup (stop the service first)"
    )
    p.add_argument("source", help="a folder written by pneumo backup")
    p.add_argument("--data-dir", default=str(settings.data_dir))
    p.set_defaults(func=cmd_restore)

    p = subparsers.add_parser(
        "proxy-config",
        help="write the nginx configuration that "
        "fronts gunicorn (PNEUMO_PROXY=1; gunicorn "
        "writes and starts it itself)",
    )
    p.add_argument("run_dir", help="a folder for nginx.conf, its pid and temporary files")
    p.set_defaults(func=cmd_proxy_config)

    p = subparsers.add_parser(
        "settings",
        help="print the service's settings (PNEUMO_* variables and defaults), or one of them",
    )
    p.add_argument("name", nargs="?", help="one setting, e.g. data_dir")
    p.set_defaults(func=cmd_settings)


def add_app_commands(subparsers) -> None:
    """Register ``pacs pull|send|retry`` on an ``argparse`` subparsers object."""
    pacs = subparsers.add_parser(
        "pacs", help="exchange studies and results with a PACS (DICOMweb; PNEUMO_DICOMWEB_URL)"
    )
    sub = pacs.add_subparsers(dest="pacs_command", required=True)
    pull = sub.add_parser("pull", help="import a study from the PACS and analyse it")
    pull.add_argument(
        "--study",
        action="append",
        required=True,
        metavar="UID",
        help="Study Instance UID (repeat for several)",
    )
    pull.add_argument("--user", required=True, help="the user who owns the results")
    pull.set_defaults(func=cmd_pacs_pull)
    send = sub.add_parser("send", help="send a result's DICOM SEG to the PACS now")
    send.add_argument("--result", required=True, metavar="ID")
    send.set_defaults(func=cmd_pacs_send)
    retry = sub.add_parser("retry", help="send every queued or failed SEG again")
    retry.set_defaults(func=cmd_pacs_retry)
    worker = sub.add_parser(
        "worker",
        help="send queued SEGs to the PACS until stopped "
        "(PNEUMO_DICOMWEB_SENDER=worker; several may run)",
    )
    worker.add_argument(
        "--poll",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how often to look for due sends when the queue is empty",
    )
    worker.add_argument(
        "--once", action="store_true", help="stop when nothing is due (cron, tests)"
    )
    worker.set_defaults(func=cmd_pacs_worker)


def build_parser() -> argparse.ArgumentParser:
    """The core's parser with the web app's commands added; the core commands' device
    and runtime default to the service's settings (``PNEUMO_DEVICE``, ``PNEUMO_RUNTIME``)."""
    settings = Settings.from_env()
    parser = core_parser()
    parser.description = (
        "Pneumothorax segmentation of chest X-rays: data, training, "
        "evaluation, prediction and the web service."
    )
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in sub.choices.values():
        known = {a.dest for a in command._actions}
        command.set_defaults(
            **{
                k: v
                for k, v in (("device", settings.device), ("runtime", settings.runtime))
                if k in known
            }
        )
    add_web_commands(sub, settings)
    add_app_commands(sub)
    stored = sub.choices["reread"]  # the core's command, extended to stored studies
    stored.add_argument(
        "--since",
        metavar="YYYY-MM-DD",
        help="re-read the stored studies uploaded since this day (UTC), "
        "keeping each read beside the first",
    )
    stored.add_argument("--until", metavar="YYYY-MM-DD", help="... up to this day, included")
    stored.add_argument("--data-dir", default=str(settings.data_dir))
    stored.set_defaults(func=cmd_reread)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``pneumo``: every command, the web app's included."""
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except (PneumoError, ValueError, StoreProblem) as exc:  # ValueError: a bad setting, named
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
