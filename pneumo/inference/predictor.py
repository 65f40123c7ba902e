"""Model folders and inference.

:class:`Predictor` loads a model folder (``model.json`` card +
``weights.weights.h5``) and :meth:`Predictor.predict` turns an
:class:`~pneumo.io.imaging.ImageRecord` into a :class:`Prediction` at the
image's own resolution. The card is the only source of input size,
normalisation, thresholds, calibration and operating points.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumo import paths
from pneumo.errors import ModelLoadError
from pneumo.inference import gate, postprocess
from pneumo.inference import runtime as runtimes
from pneumo.inference.calibration import evidence
from pneumo.inference.card import WEIGHTS, ModelCard, read_card
from pneumo.inference.device import Placement
from pneumo.inference.postprocess import OperatingPoint
from pneumo.inference.preprocess import (
    PreprocessConfig,
    enlarged_note,
    model_image,
    model_input,
)
from pneumo.io.imaging import ImageRecord

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = paths.default_model_dir()


def check_use(card: ModelCard, operating_point: str | None, prevalence: float | None) -> None:
    """Check that a model can be used as asked, from its card alone (the one check, made
    before any weights load): ``operating_point`` names one of its points, and a site
    ``prevalence`` has a calibrated probability (and the prevalence it was calibrated at)
    to re-base, within range.

    Raises:
        ModelLoadError: naming what does not fit.
    """
    try:
        card.operating_point(operating_point)
        if prevalence is not None:
            if card.calibration is None or card.calibrated_at is None:
                raise ValueError(
                    f"a site prevalence (PNEUMO_PREVALENCE) is set, but the model {card.name} "
                    "has no calibrated probability (and the prevalence it was calibrated at) "
                    "to re-base"
                )
            postprocess.rebase_probability(0.5, card.calibrated_at, prevalence)  # its range
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc


@dataclass
class ModelOutput:
    """Raw network output for a batch at the model's resolution."""

    maps: np.ndarray  # float32 (N, size, size) pixel probabilities
    head: np.ndarray | None  # float32 (N,) image-level head output, if the model has one
    features: np.ndarray | None = None  # float32 (N, F) pooled features (the chest gate's)

    def evidence(self, k: int) -> np.ndarray:
        """The ``k``-th highest pixel probability of each map."""
        return evidence(self.maps, k)


@dataclass
class Prediction:
    """What the model says about one image: the project's one verdict type.

    :meth:`Predictor.predict` returns it; a batch read carries it
    (:class:`pneumo.inference.reads.Read`); the web store's row is made from it
    (``app.service.result_row``).
    """

    mask: np.ndarray  # bool (rows, columns): the outlined region when positive
    probability_map: np.ndarray  # float32 (size, size) at the model's resolution
    probability: float  # calibrated image-level probability (or score, see card),
    #                               re-based to the site's prevalence where one is set
    operating_point: OperatingPoint
    positive: bool
    finding_below_threshold: bool  # negative verdict, probability in the review band
    area_px: int
    area_cm2: float | None
    timings: dict
    threshold: float = float("nan")  # the operating point's threshold on ``probability``'s scale
    heat_map: np.ndarray | None = None  # float32 (size, size): what the viewer colours
    size_note: str | None = None  # set when the film is under the working resolution


def predict_batches(
    model, images: np.ndarray, pcfg: PreprocessConfig, tta: bool = False, batch_size: int = 8
) -> ModelOutput:
    """Network output for model-size ``uint8`` images (N, size, size); optional flip TTA.

    ``model``: a :class:`pneumo.inference.runtime.Runtime` or a Keras model (run by Keras).
    """
    runtime = runtimes.as_runtime(model)
    maps = np.zeros(images.shape, np.float32)
    heads: list[np.ndarray] = []
    feats: list[np.ndarray] = []
    for i in range(0, len(images), batch_size):
        x = model_input(images[i : i + batch_size], pcfg)
        if tta:  # both passes in one call: a batch of two runs faster than two of one
            n = len(x)
            m2, h2, f2 = runtime.predict(np.concatenate([x, x[:, :, ::-1]]))
            m = 0.5 * (m2[:n] + m2[n:, :, ::-1])
            h = None if h2 is None else 0.5 * (h2[:n] + h2[n:])
            f = None if f2 is None else 0.5 * (f2[:n] + f2[n:])
        else:
            m, h, f = runtime.predict(x)
        maps[i : i + batch_size] = m
        if h is not None:
            heads.append(h)
        if f is not None:
            feats.append(f)
    return ModelOutput(
        maps, np.concatenate(heads) if heads else None, np.concatenate(feats) if feats else None
    )


def image_probability(card: ModelCard, out: ModelOutput) -> np.ndarray:
    """The image-level number shown to readers: calibrated where the card has a
    calibration, otherwise the uncalibrated mask evidence ("score")."""
    ev = out.evidence(postprocess.evidence_pixels(card.postprocess, card.preprocess.size))
    if card.calibration is None:
        return ev.astype(np.float64)
    return card.calibration.probability(out.head, ev)


class Predictor:
    """A loaded model with its card; thread-safe (model calls are serialised).

    ``model`` is the built Keras model, or ``None`` when ``runtime`` is a runtime made
    without one (a kept OpenVINO conversion, :func:`pneumo.inference.loading.load_predictor`);
    ``runtime`` is a runtime's name (loaded here from ``model``) or such a runtime;
    ``tta`` overrides the card's flip test-time augmentation (``None``: the card's);
    ``placement`` is where :func:`~pneumo.inference.device.configure_device` put the
    model, which :attr:`device` and :attr:`backend` describe (``"unknown"`` without it).
    """

    def __init__(
        self,
        model,
        card: ModelCard,
        model_dir: Path,
        operating_point: str | None = None,
        runtime: "str | runtimes.Runtime" = "keras",
        prevalence: float | None = None,
        tta: bool | None = None,
        placement: Placement | None = None,
    ):
        self.model = model
        threads = placement.threads if placement is not None else None
        if isinstance(runtime, str):
            choice = (card.serving or {}).get("runtime")
            on_gpu = placement is not None and placement.kind == "gpu"
            if placement is not None:
                backend = placement.backend
            else:  # Keras is imported: the model was built with it
                import keras  # lazy: see KerasRuntime

                backend = keras.config.backend()
            runtime = runtimes.resolve(runtime, choice, on_gpu, backend)
            key = None
            if runtime == "openvino" and (Path(model_dir) / WEIGHTS).exists():
                key = runtimes.weights_key(Path(model_dir) / WEIGHTS)
            self.runtime = runtimes.load(runtime, model, cache_key=key, threads=threads)
        else:  # a runtime made already (a kept conversion: no Keras model at all)
            self.runtime = runtime
            runtime = "keras" if isinstance(runtime, runtimes.KerasRuntime) else "openvino"
        self.card = card
        self.model_dir = Path(model_dir)
        self.pcfg = card.preprocess
        self.pp = card.postprocess
        self.tta = card.tta if tta is None else tta
        self.backend = placement.backend if placement else "unknown"
        # OpenVINO runs on the CPU whatever the Keras backend placed
        self.device = (
            "unknown"
            if placement is None
            else str(placement)
            if runtime == "keras"
            else f"CPU ({self.runtime.name})"
            if not threads
            else f"CPU ({self.runtime.name}, {threads} thread{'s' if threads > 1 else ''})"
        )
        self.operating_point = card.operating_point(operating_point)  # checked by load
        self.gate = gate.AppearanceGate.from_dict(card.chest_gate) if card.chest_gate else None
        self.prevalence = prevalence
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"{self.card.name} ({self.card.version or '?'})"

    @property
    def where(self) -> str:
        """Where the model runs, in words, e.g. ``CPU (tensorflow), runtime keras (tensorflow)``."""
        return f"{self.device}, runtime {self.runtime.name}"

    @classmethod
    def load(
        cls,
        model_dir: str | Path = DEFAULT_MODEL_DIR,
        warm_up: bool = True,
        operating_point: str | None = None,
        runtime: str = runtimes.DEFAULT_RUNTIME,
        prevalence: float | None = None,
        tta: bool | None = None,
        placement: Placement | None = None,
    ) -> "Predictor":
        """Build the network from the card, load its weights and optionally warm it up.

        ``operating_point`` names one of the card's points (default: the card's);
        ``runtime`` picks the inference runtime (:mod:`pneumo.inference.runtime`);
        ``prevalence`` re-bases the shown probability to a site's prevalence;
        ``tta`` and ``placement`` as for the constructor.
        """
        # lazy: importing Keras starts its backend, which configure_device must precede
        from pneumo.nets.networks import IMAGE_OUTPUT, build_model, with_features

        card = read_card(model_dir)
        check_use(card, operating_point, prevalence)  # before the weights load
        try:
            model = build_model(card.architecture)
            model.load_weights(Path(model_dir) / WEIGHTS)
            if card.chest_gate:  # the gate reads the network's pooled features
                model = with_features(model)
        except Exception as exc:
            raise ModelLoadError(
                f"Weights in {model_dir} could not be loaded into "
                f"{card.architecture.get('name')}: {exc}"
            ) from exc
        if (
            card.calibration
            and "head" in card.calibration.features
            and IMAGE_OUTPUT not in model.output_names
        ):
            raise ModelLoadError(
                f"The card in {model_dir} calibrates the image head's output, "
                "but its architecture has no image head"
            )
        try:
            predictor = cls(
                model, card, Path(model_dir), operating_point, runtime, prevalence, tta, placement
            )
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
        if warm_up:
            predictor.warm_up()
        return predictor

    def warm_up(self) -> None:
        """Run the network once on a blank image (the first call's set-up, out of the
        first request's time)."""
        self.output(np.zeros((1, self.pcfg.size, self.pcfg.size), np.uint8))

    def output(self, batch: np.ndarray) -> ModelOutput:
        """(N, size, size) uint8 model-size images -> raw network output."""
        with self._lock:
            return predict_batches(self.runtime, batch, self.pcfg, tta=self.tta)

    def probability_maps(self, batch: np.ndarray) -> np.ndarray:
        """(N, size, size) uint8 model-size images -> (N, size, size) probabilities."""
        return self.output(batch).maps

    def predict(self, record: ImageRecord) -> Prediction:
        """Predict one decoded image.

        Raises:
            NotChestXrayError: the chest gate refuses the image (no verdict is made).
        """
        t0 = time.perf_counter()
        self.check_header(record)
        small = model_image(record.pixels, self.pcfg)[None]
        t1 = time.perf_counter()
        out = self.output(small)
        self.check_appearance(out, 0)
        t2 = time.perf_counter()
        result = self.finish(record, out, 0)
        result.timings.update(
            preprocess_s=t1 - t0, model_s=t2 - t1, postprocess_s=time.perf_counter() - t2
        )
        return result

    @staticmethod
    def check_header(record: ImageRecord) -> None:
        """Refuse, before the model runs, what the header or colour says is no chest film."""
        why = gate.metadata_reason(record.meta)
        if why:
            raise gate.refuse(why)

    def check_appearance(self, out: ModelOutput, index: int) -> None:
        """Refuse image ``index`` of a batch when the card's appearance gate does."""
        if (
            self.gate is not None
            and out.features is not None
            and not self.gate.passes(out.features[index : index + 1])[0]
        ):
            raise gate.refuse(gate.APPEARANCE_REASON)

    def finish(self, record: ImageRecord, out: ModelOutput, index: int) -> Prediction:
        """Post-process image ``index`` of a batch's output for ``record``."""
        prob_map = out.maps[index]
        one = ModelOutput(
            out.maps[index : index + 1], None if out.head is None else out.head[index : index + 1]
        )
        probability = float(image_probability(self.card, one)[0])
        positive = probability >= self.operating_point.threshold
        band = postprocess.review_band(
            self.card.operating_points, self.operating_point, self.card.review_floor
        )
        in_band = (not positive) and band is not None and probability >= band[0]
        shown = self.shown(probability)
        region = postprocess.mask_from_map(prob_map, self.pp)
        shape = record.pixels.shape
        mask = (
            (postprocess.upsample_probability(region.astype(np.float32), shape) > 0.5)
            if positive and region.any()
            else np.zeros(shape, bool)
        )
        area_px = int(mask.sum())
        area_cm2 = postprocess.area_cm2(
            area_px, record.meta.pixel_spacing_mm, record.meta.spacing_warning
        )
        calibrated = self.card.calibration is not None
        return Prediction(
            mask=mask,
            probability_map=prob_map,
            probability=shown,
            operating_point=self.operating_point,
            positive=positive,
            finding_below_threshold=bool(in_band),
            area_px=area_px,
            area_cm2=area_cm2,
            timings={},
            threshold=self.shown(self.operating_point.threshold),
            heat_map=postprocess.heat_map(prob_map, shown if calibrated else None),
            size_note=enlarged_note(shape, self.pcfg),
        )

    def shown(self, probability: float) -> float:
        """A calibrated probability as shown: re-based to the site's prevalence if one is set."""
        if self.prevalence is None:
            return float(probability)
        return float(
            postprocess.rebase_probability(probability, self.card.calibrated_at, self.prevalence)
        )
