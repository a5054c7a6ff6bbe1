"""The two engines, selected by name; each yields result chunks (Arrow tables) in input order.

``local`` runs the scorer in this process. ``ray`` runs it on Ray Data:
``map_batches`` with :class:`~core.batch.scorer.BatchScorer` as a callable
class, so each actor loads the model once, ``batch_size`` rows per call and
``concurrency`` actors. It connects to ``ray_address`` (``auto``: the cluster
this machine belongs to; ``ray://host:10001``: a remote one) or starts a small
local cluster.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa

from core.batch.scorer import BatchScorer, ScorerConfig
from core.errors import DetectorError

#: Object store of a local cluster started here: rows are small, the paths are the only input.
LOCAL_OBJECT_STORE_BYTES = 200 * 1024 * 1024
REPO_ROOT = str(Path(__file__).resolve().parents[2])


class BatchEngineError(DetectorError):
    """The engine cannot run (Ray missing, cluster unreachable)."""

    code = "batch_engine"


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  #: None: start a local cluster
    concurrency: int | None = None  #: actors (default: cluster CPUs // cpus_per_actor)
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0  #: Ray resource request per actor (see README: Ray setup)
    num_cpus: int | None = None  #: CPUs of a local cluster started here (default: all)


def run_local(paths: list[str], config: ScorerConfig, *, batch_size: int) -> Iterator[pa.Table]:
    del batch_size  # one process scores row by row; batch_size only shapes Ray's work units
    scorer = BatchScorer(**config.to_kwargs())
    try:
        for path in paths:  # one row at a time: the progress bar moves per image; the writer groups rows
            yield scorer.score_paths([path])
    finally:
        scorer.close()


def _ray_init(ray, options: RayOptions) -> bool:
    """Connect or start; returns whether this call started Ray (and so must shut it down)."""
    if ray.is_initialized():
        return False
    env = {"PYTHONPATH": os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p)}
    for name in ("LADEDA_PRECISION", "LADEDA_DATA_DIR", "LADEDA_C2PA_TRUST_ANCHORS"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    try:
        if options.address:
            ray.init(address=options.address, runtime_env={"env_vars": env}, log_to_driver=False,
                     logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=options.num_cpus or os.cpu_count() or 1, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                     include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False,
                     logging_level=logging.WARNING)
    except ConnectionError as exc:
        raise BatchEngineError(f"Could not connect to the Ray cluster at {options.address}: {exc}") from None
    return True


def run_ray(paths: list[str], config: ScorerConfig, *, batch_size: int,
            options: RayOptions = RayOptions()) -> Iterator[pa.Table]:
    try:
        import ray
        import ray.data
    except ImportError:
        raise BatchEngineError("The ray engine needs Ray Data: pip install 'ray[data]' (see requirements.txt).") \
            from None
    started = _ray_init(ray, options)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows come back in input order, as with --engine local
        ctx.enable_progress_bars = False  # the driver shows one bar for both engines
        ctx.print_on_execution_start = False
        cpus = float(ray.cluster_resources().get("CPU", 1))
        concurrency = options.concurrency or max(1, int(cpus // max(options.cpus_per_actor, 1e-9)))
        concurrency = max(1, min(concurrency, len(paths)))
        threads = max(1, int(options.cpus_per_actor))
        actor_config = ScorerConfig(**{**config.to_kwargs(), "threads": config.threads or threads})
        # at least one block per actor, so a small input still spreads over the whole pool
        blocks = max(1, min(len(paths), max(-(-len(paths) // batch_size), concurrency)))
        ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=blocks)
        resources = {"num_cpus": options.cpus_per_actor}
        if options.gpus_per_actor:
            resources["num_gpus"] = options.gpus_per_actor
        # a fixed pool of `concurrency` actors (Ray ≥ 2.51 spells map_batches(concurrency=N) this way)
        ds = ds.map_batches(BatchScorer, fn_constructor_kwargs=actor_config.to_kwargs(), batch_size=batch_size,
                            batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=concurrency),
                            **resources)
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            yield batch
    finally:
        if started:
            ray.shutdown()


ENGINES: dict[str, Callable[..., Iterator[pa.Table]]] = {"local": run_local, "ray": run_ray}
