"""The core of the ``pneumo`` command line (no web app here).

Subcommands: ``inspect``, ``index``, ``stats``, ``train``, ``finalize``,
``fetch-encoder``, ``evaluate``, ``predict``, ``reread``. Each lives in a small ``cmd_*``
function; the training pipeline (Keras) is imported only by the commands that need
it (:mod:`pneumo.cli_ml`), so ``pneumo inspect`` starts fast. The installed
``pneumo`` command is :func:`app.cli.main`, which adds the web app's commands
(``serve``, ``purge``, ``create-user``, ``create-token``, ``pacs``) to
:func:`build_parser`'s parser; ``python -m pneumo.cli`` runs the core alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pneumo import cli_ml
from pneumo.data import dataset
from pneumo.data.datacfg import DEFAULT_DATA_CONFIG, DataConfig
from pneumo.data.dataset import IMAGE_SUFFIXES, iter_image_files
from pneumo.errors import PneumoError
from pneumo.io.imaging import read_image
from pneumo.io.rle import is_positive


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print what the reader finds in each file, and whether SIIM knows it."""
    table, id_map = {}, {}
    try:
        cfg = DataConfig.load(args.data)
        if cfg.rle_csv.exists():
            table, id_map = cfg.table(), cfg.id_map()
    except (OSError, ValueError, KeyError):
        pass
    files = [p for p in iter_image_files(args.files)] + [
        Path(f)
        for f in args.files
        if Path(f).is_file() and Path(f).suffix.lower() not in IMAGE_SUFFIXES
    ]
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
            label = " (pneumothorax)" if is_positive(table[image_id]) else " (no pneumothorax)"
        m = rec.meta
        spacing = (
            f"{m.pixel_spacing_mm[0]:.4g} x {m.pixel_spacing_mm[1]:.4g} mm ({m.spacing_source})"
            if m.pixel_spacing_mm
            else "none"
        )
        if m.spacing_warning:
            spacing += f"; {m.spacing_warning}"
        info = {
            "format": m.format,
            "transfer syntax": (
                f"{m.transfer_syntax} ({m.transfer_syntax_name})" if m.transfer_syntax else "-"
            ),
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
    if failures:
        print(f"{failures} of {len(files)} file(s) could not be read", file=sys.stderr)
    return 1 if failures and not args.keep_going else 0


def cmd_index(args: argparse.Namespace) -> int:
    """Index the data, print counts, and write (or check) the split file."""
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
            [s for s in samples if s.source == "siim"], split
        )
        print(f"cross-split pixel duplicates: {len(pairs)}")
        for a, b in pairs:
            print(f"  {a} ~ {b}")
        return 1 if pairs else 0
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pneumo",
        description="Pneumothorax segmentation "
        "of chest X-rays: data, training, evaluation, prediction.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="show what the reader finds in image files")
    p.add_argument("files", nargs="+", help="files or folders")
    p.add_argument("--data", default=str(DEFAULT_DATA_CONFIG), help="data config JSON")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "--keep-going",
        dest="keep_going",
        action="store_true",
        help="exit 0 even when some files could not be read (default: exit 1)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 if any file fails (the default now; kept for old scripts)",
    )
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("index", help="match images to SIIM labels and make the split")
    p.add_argument("--data", default=str(DEFAULT_DATA_CONFIG), help="data config JSON")
    p.add_argument("--write", help="write the split CSV here")
    p.add_argument(
        "--check-pixels", action="store_true", help="look for identical images across train/val"
    )
    p.set_defaults(func=cmd_index)

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
