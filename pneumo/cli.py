"""The ``pneumo`` command line.

Subcommands: ``inspect``, ``index``, ``stats``, ``train``, ``evaluate``,
``predict``, ``serve``, ``purge``, ``create-user``. Each subcommand lives in a
small ``cmd_*`` function; heavy imports (Keras) happen inside them so
``pneumo inspect`` starts fast.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pneumo.errors import PneumoError


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print what the reader finds in each file, and whether SIIM knows it."""
    from pneumo.datacfg import DataConfig
    from pneumo.dataset import IMAGE_SUFFIXES, iter_image_files
    from pneumo.imaging import read_image

    table, id_map = {}, {}
    try:
        cfg = DataConfig.load(args.data)
        if cfg.rle_csv.exists():
            table, id_map = cfg.table(), cfg.id_map()
    except (OSError, ValueError, KeyError):
        pass
    files = [p for p in iter_image_files(args.files)] + [
        Path(f) for f in args.files if Path(f).is_file()
        and Path(f).suffix.lower() not in IMAGE_SUFFIXES]
    failures = 0
    for path in files:
        try:
            rec = read_image(path)
        except PneumoError as exc:
            failures += 1
            print(f"{path}: ERROR {type(exc).__name__}: {exc}")
            continue
        image_id = rec.image_id or id_map.get(path.name) or path.stem
        known = image_id in table
        label = ""
        if known:
            from pneumo.rle import is_positive
            label = " (pneumothorax)" if is_positive(table[image_id]) else " (no pneumothorax)"
        m = rec.meta
        spacing = (f"{m.pixel_spacing_mm[0]:.4g} x {m.pixel_spacing_mm[1]:.4g} mm "
                   f"({m.spacing_source})" if m.pixel_spacing_mm else "none")
        if m.spacing_warning:
            spacing += f"; {m.spacing_warning}"
        info = {
            "format": m.format,
            "transfer syntax": (f"{m.transfer_syntax} ({m.transfer_syntax_name})"
                                if m.transfer_syntax else "-"),
            "size": f"{m.columns} x {m.rows} (w x h), {m.bits_stored}-bit",
            "photometric": m.photometric_interpretation,
            "pixel spacing": spacing,
            "view position": m.view_position or "-",
            "SIIM ground truth": (f"known{label}" if known else "unknown"),
        }
        if args.json:
            print(json.dumps({"file": str(path), "image_id": image_id, **info}))
        else:
            print(f"{path}")
            for key, value in info.items():
                print(f"  {key:18s} {value}")
    return 1 if failures and args.strict else 0


def cmd_index(args: argparse.Namespace) -> int:
    """Index the data, print counts, and write (or check) the split file."""
    from pneumo import dataset
    from pneumo.datacfg import DataConfig

    cfg = DataConfig.load(args.data)
    result, samples = cfg.samples()
    counts = result.counts()
    counts["nih_negatives"] = sum(1 for s in samples if s.source == "nih" and not s.positive)
    counts["nih_positives"] = sum(1 for s in samples if s.source == "nih" and s.positive)
    for key, value in counts.items():
        print(f"{key:20s} {value}")
    for path in result.unmatched:
        print(f"unmatched: {path}")
    split = cfg.make_split(samples)
    out = Path(args.write) if args.write else None
    if out:
        dataset.write_split(out, samples, split)
        print(f"wrote split to {out}")
    for name, counter in sorted(dataset.summarise(samples, split).items()):
        print(f"{name:6s} " + ", ".join(f"{k}={v}" for k, v in sorted(counter.items())))
    if args.check_pixels:
        pairs = dataset.cross_split_pixel_duplicates(
            [s for s in samples if s.source == "siim"], split)
        print(f"cross-split pixel duplicates: {len(pairs)}")
        for a, b in pairs:
            print(f"  {a} ~ {b}")
        return 1 if pairs else 0
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run gunicorn with the project's settings (a convenience wrapper)."""
    import os
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PNEUMO_HOST=args.host, PNEUMO_PORT=str(args.port),
               PNEUMO_WORKERS=str(args.workers))
    if args.model:
        env["PNEUMO_MODEL_DIR"] = str(Path(args.model).resolve())
    os.chdir(root)
    os.execvpe(sys.executable, [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                                "wsgi:app"], env)
    return 0  # pragma: no cover


def cmd_purge(args: argparse.Namespace) -> int:
    """Delete stored results older than the retention period (rows and files together)."""
    n = _open_store(args.data_dir).purge(args.days)
    print(f"purged {n} result(s) older than {args.days:g} days from {args.data_dir}")
    return 0


def default_data_dir() -> str:
    """The app's data directory under the same environment variables as the app."""
    import os
    if os.environ.get("PNEUMO_DATA_DIR"):
        return os.environ["PNEUMO_DATA_DIR"]
    instance = os.environ.get("PNEUMO_INSTANCE_DIR",
                              str(Path(__file__).resolve().parent.parent / "instance"))
    return str(Path(instance) / "data")


def _open_store(data_dir: str):
    from app.store import Store
    store = Store(data_dir)
    store.init()
    return store


def _new_password(args: argparse.Namespace) -> str | None:
    """One line from stdin when asked to or when stdin is not a terminal (read
    once, no prompt); else a hidden prompt asked twice. None if the two differ."""
    if args.password_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    import getpass
    password = getpass.getpass(f"Password for {args.username}: ")
    return password if getpass.getpass("Repeat the password: ") == password else None


def cmd_create_user(args: argparse.Namespace) -> int:
    """Create a login for the web app (password from stdin or a prompt)."""
    from app import users
    password = _new_password(args)
    if password is None:
        print("error: the passwords do not match", file=sys.stderr)
        return 2
    with _open_store(args.data_dir).connect() as db:
        try:
            users.create_user(db, args.username, password)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(f"created user {args.username}")
    return 0


def cmd_create_token(args: argparse.Namespace) -> int:
    """Print a new API token for a user (shown once; only its hash is stored)."""
    from app import users
    with _open_store(args.data_dir).connect() as db:
        try:
            print(users.create_token(db, args.username))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    from pneumo.datacfg import DEFAULT_DATA_CONFIG

    parser = argparse.ArgumentParser(prog="pneumo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="show what the reader finds in image files")
    p.add_argument("files", nargs="+", help="files or folders")
    p.add_argument("--data", default=str(DEFAULT_DATA_CONFIG), help="data config JSON")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--strict", action="store_true", help="exit 1 if any file fails")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("index", help="match images to SIIM labels and make the split")
    p.add_argument("--data", default=str(DEFAULT_DATA_CONFIG), help="data config JSON")
    p.add_argument("--write", help="write the split CSV here")
    p.add_argument("--check-pixels", action="store_true",
                   help="look for identical images across train/val")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("serve", help="start the web app with gunicorn")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--model", help="model folder (default: the bundled model)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("purge", help="delete results older than the retention period")
    p.add_argument("--data-dir", default=default_data_dir())
    p.add_argument("--days", type=float, default=30.0)
    p.set_defaults(func=cmd_purge)

    default_data = default_data_dir()
    p = sub.add_parser("create-user", help="create a login for the web app")
    p.add_argument("username")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password as one line from stdin (also the default when "
                        "stdin is not a terminal)")
    p.add_argument("--data-dir", default=default_data)
    p.set_defaults(func=cmd_create_user)

    p = sub.add_parser("create-token", help="create an API token for a user")
    p.add_argument("username")
    p.add_argument("--data-dir", default=default_data)
    p.set_defaults(func=cmd_create_token)

    from pneumo import cli_ml
    cli_ml.add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PneumoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
