"""Fill a family's shared cache once, before its search starts (e.g. the SIFT descriptors).

Some families derive artefacts that do not depend on the searched knobs (SIFT descriptors depend on the
data and the SIFT settings, not on ``k`` or the SVM knobs), so one pass serves every trial. A family says
so itself (``Family.warms_shared_cache`` / ``Family.warm_cache``); the driver runs that pass as a single
Ray task with several CPUs (on whichever node has them), writing into the run's cache directory on the
shared storage; trials then only read the cache.
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


def _warm(ref: dict[str, Any], params: dict[str, Any], n_jobs: int, searched: list[str]) -> dict[str, int]:
    ctx = TrialContext.load(ref)
    family = families.get(ctx.family)
    return family.warm_cache(params, datasets(ctx), ctx.cache_dir, n_jobs, searched)


def prewarm(ctx: TrialContext, space: SearchSpace, cluster_cpus: float, max_jobs: int = 16) -> None:
    """Run the family's cache pass for the space's default/fixed settings as one Ray task."""
    params = families.get(ctx.family).resolve_params(dict(space.fixed))
    searched = [p.name for p in space.params]
    n_jobs = int(max(1, min(max_jobs, cluster_cpus)))
    t0 = time.perf_counter()
    task = ray.remote(num_cpus=n_jobs)(_warm)
    counts = ray.get(task.remote(ctx.ref(), params, n_jobs, searched))
    parts = " / ".join(f"{n} {part}" for part, n in counts.items())
    print(
        f"[{ctx.family}] shared cache ready in {time.perf_counter() - t0:.1f}s ({parts} items, {n_jobs} thread(s))",
        flush=True,
    )
