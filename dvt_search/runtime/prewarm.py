"""Extract the SIFT descriptors once, before the SIFT search starts.

SIFT descriptors depend on the data and the SIFT settings, not on ``k`` or the SVM knobs, so one
extraction per (partition, SIFT settings) serves every trial. The driver runs it as a single Ray task
with several CPUs (on whichever node has them), writing into ``<run>/cache`` on the shared storage;
trials then only read the cache. When the space searches SIFT settings themselves, only the default (or
``fixed``) settings are pre-warmed; other settings are extracted by the first trial that needs them, once
(the cache holds a per-entry lock).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ray

from dvt_search import families
from dvt_search.search.space import SearchSpace

from .setup import TrialContext, datasets

log = logging.getLogger(__name__)

_SIFT_KNOBS = ("sift_", "dense")


def _extract(ref: dict[str, Any], params: dict[str, Any], n_jobs: int) -> dict[str, Any]:
    import joblib

    from dvt_search.families.sift_features import SiftParams, extract_descriptors

    ctx = TrialContext.load(ref)
    data = datasets(ctx)
    sift = SiftParams.from_family_params(params)
    counts = {}
    # Threads, not loky processes: OpenCV releases the GIL, and loky's resource tracker misbehaves
    # inside Ray worker processes.
    with joblib.parallel_config(backend="threading"):
        for part in ("train", "val"):
            desc, _ = extract_descriptors(data[part], sift, ctx.cache_dir, n_jobs)
            counts[part] = int(len(desc))
    return counts


def prewarm_sift(ctx: TrialContext, space: SearchSpace, cluster_cpus: float, max_jobs: int = 16) -> None:
    """Fill the SIFT descriptor cache for the space's default SIFT settings (train and val partitions)."""
    params = families.get(ctx.family).resolve_params(dict(space.fixed))
    searched = [p.name for p in space.params if p.name.startswith(_SIFT_KNOBS)]
    if searched:
        log.info("SIFT settings %s are searched: pre-warming only the default/fixed settings", searched)
    n_jobs = int(max(1, min(max_jobs, cluster_cpus)))
    t0 = time.perf_counter()
    task = ray.remote(num_cpus=n_jobs)(_extract)
    counts = ray.get(task.remote(ctx.ref(), params, n_jobs))
    print(
        f"[{ctx.family}] SIFT descriptor cache ready in {time.perf_counter() - t0:.1f}s "
        f"({counts['train']} train / {counts['val']} val descriptors, {n_jobs} process(es))",
        flush=True,
    )
