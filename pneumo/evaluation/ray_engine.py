"""The ``ray`` engine of :func:`pneumo.evaluation.engines.reread`: Predictors as Ray actors.

Each actor (:class:`BatchReader`) loads the model once
(:func:`~pneumo.inference.loading.load_predictor`) and then reads batches with
:func:`~pneumo.inference.reads.read_batch`, the step the ``local`` engine runs, so both
give the same numbers. The driver only reads the files' bytes and hands out
batches: round robin over the actors, at most :data:`WINDOW_PER_ACTOR` batches per
actor in flight (10,000 files are never all submitted at once), results in input order.

Ray is an optional extra (``pip install 'pneumo[ray]'``), imported only here and only
when the engine runs: serving never needs it.

On an existing Ray cluster (``--address`` / ``address=``: ``auto`` on a node of the
cluster, ``HEAD:6379``, or ``ray://HEAD:10001`` through Ray Client):

* every node runs the same Python with ``pneumo`` (and its Keras backend) installed;
* the model folder is readable at the same path on the driver and on every node
  (a shared mount, or the same checkout everywhere): workers load it from there;
* a cluster with GPUs gets one actor per GPU (``num_gpus=1`` each); without GPUs,
  one actor per ``cores_per_actor`` CPU cores of each node (TensorFlow then uses
  that many threads per operation);
* the driver connects and disconnects; the cluster keeps running.

Without an address, a local Ray is started on this machine's cores (no dashboard,
workers' logs kept off the terminal, workers at the command's own priority) and shut
down at the end; a Ray this process
already runs (``ray.init`` by the caller) is used as it is and left running.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TypeVar

from pneumo.errors import ModelLoadError, PneumoError
from pneumo.inference.loading import ModelOptions, load_predictor
from pneumo.inference.reads import Item, Read, read_batch

#: Batches in flight per actor: one being read, one waiting, so no actor idles.
WINDOW_PER_ACTOR = 2
#: Environment variables the workers must share with the driver (same backend, same numbers).
SHARED_ENVIRONMENT = ("KERAS_BACKEND",)

T = TypeVar("T")
H = TypeVar("H")


class BatchReader:
    """One Predictor in a Ray worker process: :meth:`load` once, then :meth:`read` batches."""

    def __init__(self, options: ModelOptions, max_pixels: int):
        self.options, self.max_pixels = options, max_pixels
        self.predictor = None

    def load(self) -> str:
        """Load the model; say where it runs, e.g. ``CPU (tensorflow, 2 threads), ...``."""
        self.predictor = load_predictor(self.options)
        return self.predictor.where

    def read(self, items: list[Item]) -> list[Read]:
        """One batch, as :func:`~pneumo.inference.reads.read_batch` reads it."""
        return read_batch(self.predictor, items, self.max_pixels)


@dataclass(frozen=True)
class ActorPlan:
    """How many actors, and what each asks Ray for."""

    count: int
    num_cpus: int
    num_gpus: int
    threads: int | None  # TensorFlow threads per operation (None: the backend's choice)


def plan_actors(nodes: Iterable[dict], cores_per_actor: int) -> ActorPlan:
    """One actor per GPU of the live nodes, else per ``cores_per_actor`` cores of each.

    ``nodes`` as ``ray.nodes()`` lists them (``Alive``, ``Resources``). An actor never
    asks for more cores than one node has, so every actor can be placed.
    """
    alive = [node.get("Resources", {}) for node in nodes if node.get("Alive")]
    gpus = sum(int(res.get("GPU", 0)) for res in alive)
    if gpus:
        return ActorPlan(gpus, num_cpus=1, num_gpus=1, threads=None)
    cpus = [int(res.get("CPU", 0)) for res in alive]
    cores = min(cores_per_actor, max(cpus, default=0))
    if cores < 1:
        raise ModelLoadError("The Ray cluster has no live node with a CPU or a GPU.")
    return ActorPlan(sum(c // cores for c in cpus), num_cpus=cores, num_gpus=0, threads=cores)


def in_order(
    chunks: Iterable[T], submit: Callable[[int, T], H], fetch: Callable[[H], list], window: int
) -> Iterator[list]:
    """Submit chunks as they come, at most ``window`` unfetched; yield results in order."""
    pending: deque[H] = deque()
    for index, chunk in enumerate(chunks):
        pending.append(submit(index, chunk))
        if len(pending) >= window:
            yield fetch(pending.popleft())
    while pending:
        yield fetch(pending.popleft())


def machine_cores() -> int:
    """The CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def ray_reads(
    options: ModelOptions,
    chunks: Iterable[list[Item]],
    *,
    address: str | None,
    cores_per_actor: int,
    max_pixels: int,
    on_ready: Callable[[str], None] | None = None,
) -> Iterator[list[Read]]:
    """The reads of each chunk, in order, by Ray actors (see the module docstring).

    Each actor loads ``options``' model folder by its absolute path, with the CPU
    threads of the actor plan (:func:`plan_actors`) in place of ``options.threads``.
    """
    import ray  # lazy: ray is an optional extra

    started = _connect(ray, address)
    actors: list = []
    try:
        plan = plan_actors(ray.nodes(), cores_per_actor)
        reader = ray.remote(BatchReader).options(
            num_cpus=plan.num_cpus, num_gpus=plan.num_gpus, runtime_env=_runtime_env()
        )
        each = replace(options, model_dir=options.model_dir.resolve(), threads=plan.threads)
        actors = [reader.remote(each, max_pixels) for _ in range(plan.count)]
        where = _load(ray, actors)
        if on_ready:
            on_ready(
                f"{len(actors)} Ray actor{'s' if len(actors) > 1 else ''}: "
                + "; ".join(sorted(set(where)))
            )
        yield from in_order(
            chunks,
            lambda i, chunk: actors[i % len(actors)].read.remote(chunk),
            ray.get,
            WINDOW_PER_ACTOR * len(actors),
        )
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()


def _connect(ray, address: str | None) -> bool:
    """Join the Ray this process runs, or ``address``'s, or start one; True if started here."""
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        ray.init(address=address, **quiet)
    else:
        # "local": a new Ray of this process's own, even where RAY_ADDRESS or `ray start`
        # left a cluster to join (pass address="auto" for that). Its workers do this
        # command's work, so they keep its priority (Ray's default lowers theirs by 15:
        # on a shared machine they then yield to every other process)
        ray.init(
            address="local",
            num_cpus=machine_cores(),
            include_dashboard=False,
            _system_config={"worker_niceness": 0},
            **quiet,
        )
    return True


def _runtime_env() -> dict | None:
    shared = {name: os.environ[name] for name in SHARED_ENVIRONMENT if name in os.environ}
    return {"env_vars": shared} if shared else None


def _load(ray, actors: list) -> list[str]:
    """Every actor's model loaded; a worker's load error raised here with its message."""
    try:
        return ray.get([actor.load.remote() for actor in actors])
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, PneumoError):
            raise ModelLoadError(f"A Ray worker could not load the model: {cause}") from None
        raise
