"""The worker's model, loaded in the background so the process answers at once.

``/healthz`` answers while the weights load; ``/readyz`` answers 503 until the
model is loaded and warmed up (200 after); requests that need the model wait
for it (up to ``wait_s``) and get a clear 503 if it is still not there.
The card is read before the worker serves, so a wrong model folder still
stops the service at start-up with the reason.
"""

from __future__ import annotations

import logging
import threading

from pneumo.errors import PneumoError

from pneumo.inference.loading import ModelOptions, check_model

log = logging.getLogger(__name__)


class ModelNotReady(PneumoError):
    """The model is still loading (or failed to load)."""

    code = "model_loading"
    http_status = 503


class ModelHolder:
    """A Predictor that becomes available once loaded."""

    def __init__(self, predictor=None):
        self.predictor = predictor
        self.error: str | None = None
        self._ready = threading.Event()
        if predictor is not None:
            self._ready.set()

    @property
    def ready(self) -> bool:
        """True once the model is loaded and warmed up."""
        return self._ready.is_set() and self.predictor is not None

    def start(self, options: ModelOptions) -> None:
        """Check the card now, load the model on a background thread
        (:func:`~pneumo.inference.loading.load_predictor`: the device, the runtime, the
        operating point and the site prevalence as ``options`` say)."""
        check_model(options)  # fail fast, with the reason
        thread = threading.Thread(
            target=self._load, name="model-loader", daemon=True, args=(options,)
        )
        thread.start()

    def _load(self, options: ModelOptions) -> None:
        # lazy: loading imports Keras and starts its backend, which must happen in the
        # worker's loader thread after the device is chosen, never in gunicorn's master
        # (no TF across fork)
        from pneumo.inference.device import weights_device
        from pneumo.inference.loading import load_predictor

        try:
            predictor = load_predictor(options)
            self.predictor = predictor
            log.info(
                "model %s loaded from %s on %s (weights on %s)",
                predictor.name,
                options.model_dir,
                predictor.device,
                weights_device(predictor.model) if predictor.model is not None else "the CPU",
            )
        except Exception as exc:  # noqa: BLE001 - reported by /readyz and every request
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("the model could not be loaded: %s", self.error)
        finally:
            self._ready.set()

    def unavailable(self, reason: str) -> None:
        """No model in this process (a command that only reads or sends): every
        :meth:`get` raises :class:`ModelNotReady` with ``reason``."""
        self.error = reason
        self._ready.set()

    def get(self, wait_s: float = 120.0):
        """The Predictor; waits for loading; raises :class:`ModelNotReady`."""
        self._ready.wait(wait_s)
        if self.predictor is None:
            raise ModelNotReady(
                f"The model could not be loaded ({self.error})."
                if self.error
                else "The model is still loading; try again in a few seconds."
            )
        return self.predictor
