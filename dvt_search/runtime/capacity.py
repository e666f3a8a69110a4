"""What the Ray cluster can hold: node types x how many of each, from the autoscaler when it says so.

An autoscaling cluster starts empty (a ``CPU: 0`` head, GPU workers with ``min_workers: 0``):
``ray.cluster_resources()`` at connect time says 0 CPU / 0 GPU, which is not what it can become. So the
search sizes concurrency and checks feasibility on a table of node types, each with its resources and the
most nodes of that type the cluster may run, read from (first that answers):

1. the cluster config the GCS holds for its autoscaler (``ray._private.state.state.get_cluster_config()``,
   Ray 2.60: ``node_group_configs`` with ``resources`` and ``max_count``; set where the platform reports it,
   e.g. KubeRay's autoscaler v2);
2. the autoscaler's YAML config (``available_node_types`` with ``resources`` and ``max_workers``, the head
   once): ``--autoscaling-config FILE``, else ``~/ray_bootstrap_config.yaml`` when joining a cluster
   (where ``ray up`` puts it on the head, which is where ``ray submit`` / ``ray job submit`` run the
   search). A node type without explicit ``resources`` (the ``local`` provider's ``{}``: detected when
   the node starts) makes the file unusable and the next source answers;
3. the nodes alive now, as one node holding all their resources: a fixed cluster, as before.

A trial is a group of ``workers`` processes of ``{CPU: cpus, GPU: gpus}`` each. A process fits a node type
when every resource it asks for fits one node of that type; trials that fit at once = process slots over
all node types x their counts // ``workers``. A trial no node type can ever hold is a :class:`RunError`
naming the resource, raised before the run directory is created.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dvt_search.families.base import TrialNeeds

from .options import RunError

log = logging.getLogger(__name__)

#: Where ``ray up`` writes the autoscaler's config on the head node.
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
#: Nodes counted for a node type without a limit (``max_count: -1``).
UNLIMITED = 1_000_000


@dataclass(frozen=True)
class NodeType:
    """One kind of node: its resources and the most nodes of it the cluster may hold."""

    name: str
    resources: Mapping[str, float]
    max_count: int

    def holds(self, process: Mapping[str, float]) -> int:
        """How many ``process`` bundles one node of this type holds at once."""
        fits = [
            math.floor(self.resources.get(res, 0.0) / amount + 1e-9)
            for res, amount in process.items()
            if amount > 0
        ]
        return min(fits) if fits else UNLIMITED

    def describe(self) -> str:
        shown = {"CPU": 0.0, **{k: v for k, v in self.resources.items() if _shown(k)}}
        res = ", ".join(f"{k}: {v:g}" for k, v in sorted(shown.items()))
        count = "unlimited" if self.max_count >= UNLIMITED else f"max {self.max_count}"
        return f"{self.name} {{{res}}} ({count})"


@dataclass(frozen=True)
class Capacity:
    """The node-type table of the cluster and where it came from (see the module docstring)."""

    node_types: tuple[NodeType, ...]
    source: str

    @property
    def autoscaling(self) -> bool:
        """Whether the table describes what the cluster can become (not just the nodes alive now)."""
        return not self.source.startswith("nodes alive")

    def largest(self, resource: str) -> float:
        """The most of ``resource`` one node can have (e.g. the threads one pre-warm task may use)."""
        return max((t.resources.get(resource, 0.0) for t in self.node_types if t.max_count > 0), default=0.0)

    def slots(self, process: Mapping[str, float]) -> int:
        """Processes of ``process`` the whole cluster can hold at once."""
        return sum(min(UNLIMITED, t.holds(process) * t.max_count) for t in self.node_types)

    def check(self, family: str, needs: TrialNeeds) -> None:
        """Raise :class:`RunError` when no node type can ever hold one of the family's trials."""
        process = _process(needs)
        if self.slots(process) >= needs.workers:
            return
        missing = [r for r, amount in process.items() if amount > 0 and self.largest(r) < amount]
        what = ", ".join(f"{r}: {process[r]:g}" for r in (missing or [r for r in process if process[r] > 0]))
        per = "per worker" if needs.workers > 1 else "per trial"
        reason = (
            f"no node type has {' and '.join(missing)} enough for one"
            if missing
            else f"the cluster holds at most {self.slots(process)} such process(es), {needs.workers} needed"
        )
        raise RunError(
            f"{family}: a trial needs {{{what}}} {per} ({needs.workers} worker(s)) but {reason}; node types "
            f"({self.source}): {'; '.join(t.describe() for t in self.node_types) or 'none'}. Lower "
            "--cpus-per-trial / --gpus-per-trial / --train-workers, or add a node type that holds it"
        )

    def max_concurrent(self, needs: TrialNeeds) -> int:
        """Trials of ``needs`` that fit at once (at least 1)."""
        return max(1, min(UNLIMITED, self.slots(_process(needs)) // max(1, needs.workers)))

    def beside(self, processes: list[Mapping[str, float]]) -> Capacity:
        """The table less the CPUs that GPU processes take on GPU node types, packed as tight as they go.

        On each node type with GPUs, the most CPU any one of ``processes`` takes when it fills the node's
        GPUs is taken away; node types without GPUs are unchanged. What is left is what CPU-only trials can
        use without ever holding a CPU a GPU trial needs next to its GPU.
        """
        out = []
        for t in self.node_types:
            res = dict(t.resources)
            if res.get("GPU", 0.0) > 0 and processes:
                used = max(t.holds(p) * p.get("CPU", 0.0) for p in processes if p.get("GPU", 0.0) > 0)
                res["CPU"] = max(0.0, res.get("CPU", 0.0) - min(UNLIMITED, used))
            out.append(NodeType(t.name, res, t.max_count))
        return Capacity(tuple(out), self.source)

    def beside_gpu_trials(self, needs: Mapping[str, TrialNeeds]) -> Capacity:
        """What CPU-only work may use while the GPU families among ``needs`` fill their GPUs."""
        return self.beside([_process(n) for n in needs.values() if n.gpus > 0])

    def concurrent_caps(self, needs: Mapping[str, TrialNeeds]) -> dict[str, int]:
        """Each family's concurrency cap when all of ``needs``' families search at once.

        * GPU families (direct trials): the whole cluster each. Their trials beyond the free resources
          wait PENDING and start as soon as another family's trial ends: a family's ASHA tail is filled by
          the others' trials instead of leaving GPUs idle. A direct trial is one reservation made at once,
          so waiting trials hold nothing and cannot deadlock.
        * CPU-only families beside GPU families: the CPUs the GPU trials leave free (:meth:`beside`), so
          SIFT never takes the CPU a GPU trial needs next to its GPU.
        * ``ray-train`` families share the cluster: their caps add up to what fits at once. A Ray Train
          trial holds its driver's CPU share while it waits for its workers' placement group, so more of
          them than the cluster holds could pile up drivers that keep every group from fitting.
        """
        gpu = [_process(n) for n in needs.values() if n.gpus > 0]
        spare = self.beside_gpu_trials(needs)
        ray_train = [f for f, n in needs.items() if n.trainer == "ray-train"]
        caps = {}
        for fam, n in needs.items():
            cap = self.max_concurrent(n) if n.gpus > 0 or not gpu else spare.max_concurrent(n)
            if fam in ray_train:
                cap = max(1, cap // len(ray_train))
            caps[fam] = cap
        return caps


def _shown(resource: str) -> bool:
    """Resources worth naming in a message (not memory sizes, node ids or accelerator labels)."""
    hidden = ("memory", "object_store_memory")
    return resource not in hidden and not resource.startswith(("node:", "accelerator_type:"))


def _process(needs: TrialNeeds) -> dict[str, float]:
    """What one training process of a trial reserves (a ray-train trial's 0.01-CPU driver is negligible)."""
    return {"CPU": float(needs.cpus), "GPU": float(needs.gpus)}


def from_launcher_config(config: Mapping[str, Any], source: str) -> Capacity | None:
    """The table of a cluster-launcher config (``available_node_types``); ``None`` when it cannot say."""
    types = config.get("available_node_types")
    if not isinstance(types, Mapping) or not types:
        return None
    head = config.get("head_node_type")
    total = config.get("max_workers")
    out = []
    for name, spec in types.items():
        resources = (spec or {}).get("resources")
        if not isinstance(resources, Mapping) or not resources:
            return None  # detected when the node starts (the local provider's `{}`): unknown from the file
        count = int(spec.get("max_workers", 0) or 0)
        if total is not None:
            count = min(count, int(total))
        if name == head:
            count = max(1, count)  # the head itself, plus any worker nodes of its type
        out.append(NodeType(str(name), {str(k): float(v) for k, v in resources.items()}, count))
    return Capacity(tuple(out), source)


def from_config_file(path: str | os.PathLike[str]) -> Capacity | None:
    """Read an autoscaler YAML config (``None`` when it has no usable node types)."""
    import yaml

    path = Path(path).expanduser()
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RunError(f"--autoscaling-config {path}: cannot read it ({exc})") from None
    if not isinstance(config, Mapping):
        raise RunError(f"--autoscaling-config {path}: not a Ray cluster config (no mapping)")
    return from_launcher_config(config, f"autoscaler config {path}")


def from_gcs() -> Capacity | None:
    """The cluster config the GCS holds for the autoscaler (``None`` where nothing reported one)."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception as exc:  # private API: a Ray without it just has no answer here
        log.debug("no cluster config from the GCS: %s", exc)
        return None
    if config is None or not config.node_group_configs:
        return None
    out = []
    for group in config.node_group_configs:
        count = UNLIMITED if group.max_count < 0 else int(group.max_count)
        out.append(NodeType(group.name or "group", {k: float(v) for k, v in group.resources.items()}, count))
    return Capacity(tuple(out), "the GCS's autoscaler cluster config")


def from_live_nodes() -> Capacity:
    """The nodes alive now, as one node holding all their resources (a fixed cluster)."""
    import ray

    res = ray.cluster_resources()
    alive = len([n for n in ray.nodes() if n.get("Alive")])
    return Capacity(
        (NodeType("alive nodes", {k: float(v) for k, v in res.items()}, 1),), f"nodes alive now: {alive}"
    )


def discover(config_file: str | os.PathLike[str] | None, *, joined: bool) -> Capacity:
    """The cluster's table from the first source that answers (see the module docstring)."""
    found = from_gcs()
    if found is None and config_file is not None:
        found = from_config_file(config_file)
        if found is None:
            log.warning(
                "%s has no node types with explicit resources; using the nodes alive now", config_file
            )
    if found is None and joined and Path(BOOTSTRAP_CONFIG).expanduser().is_file():
        found = from_config_file(BOOTSTRAP_CONFIG)
    return found if found is not None else from_live_nodes()


__all__ = ["Capacity", "NodeType", "discover", "from_config_file", "from_launcher_config"]
