"""``--gpus-per-trial auto``: trials packed onto GPUs by their measured memory, per batch size.

Before a family's trials start, the driver measures once per run, for each batch size the family's search
space can draw (its categorical choices, a fixed value, the upper end of an int range, and the paper's
value), the peak GPU memory of a few real training steps (:func:`dvt_search.engine.memory.
probe_peak_bytes`; the family's paper configuration with that batch size) at each input size the trial
can train at (:func:`probe_points`: the family's own ``input_size`` choices, else the run's size) and the
largest ``context_slices`` the space can draw (more context slices, more input channels: the bound). The
probe runs as one Ray task holding a whole GPU (``num_gpus=1``), so it lands on a GPU node even when the
driver's node has none, and reads the GPU's memory there (``torch.cuda.get_device_properties``).
Measurements are kept in the run directory (:attr:`RunDir.gpu_memory_file
<dvt_search.rundir.layout.RunDir.gpu_memory_file>`): a resumed run, or another family with the same
(family, batch size, image size, channels), never measures again.

Each (batch size, input size) gets the share :func:`~dvt_search.engine.memory.gpu_share` gives (the
largest ``1/k`` that fits with the stated margin). Ray 2.60's ``tune.with_resources`` accepts a callable of the trial's
config (checked in ``ray/tune/trainable/util.py`` and ``function_trainable.py``: it is called per trial
with the resolved config and returns a ``PlacementGroupFactory``), so each trial reserves the share of
*its* batch size and input size (:class:`GpuPlan`), and its record books that share's GPU seconds; a ``ray-train`` trial's workers take it from the same plan. A
configuration that does not fit a whole GPU stops the run before any trial starts, naming its need.

On a cluster with no GPU node ``auto`` is a :class:`~.options.RunError` (nothing to measure or pack).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dvt_search import families
from dvt_search.engine.memory import (
    DEFAULT_MARGIN,
    DEFAULT_MAX_TRIALS,
    DEFAULT_OVERHEAD_BYTES,
    GIB,
    PackingError,
    gpu_share,
)
from dvt_search.fsutil import atomic_write_text
from dvt_search.rundir import RunDir
from dvt_search.search.space import SearchSpace

from .options import RunError

log = logging.getLogger(__name__)

PROBE_STEPS = 3
FORMAT = "dvt-search-gpu-memory/1"


def batch_sizes(space: SearchSpace) -> list[int]:
    """Every batch size a trial of ``space`` can run (see the module docstring), ascending."""
    sizes: set[int] = set()
    defaults = families.get(space.family).default_params()
    if "batch_size" in space.fixed:
        sizes.add(int(space.fixed["batch_size"]))
    for p in space.params:
        if p.name != "batch_size":
            continue
        if p.choices is not None:
            sizes.update(int(c) for c in p.choices)
        elif p.high is not None:
            sizes.add(int(p.high))  # memory grows with the batch: the largest bounds the range
    if "batch_size" in defaults:
        sizes.add(int(defaults["batch_size"]))  # the paper trial's
    return sorted(sizes)


def _values(space: SearchSpace, name: str) -> list[Any]:
    """Every value of knob ``name`` a trial of ``space`` can draw (its default, a fixed value, the
    choices, the top of a numeric range); ``[]`` when the family has no such knob."""
    defaults = families.get(space.family).default_params()
    if name not in defaults:
        return []
    values: list[Any] = [defaults[name]]
    if name in space.fixed:
        values = [space.fixed[name]]
    for p in space.params:
        if p.name == name:
            values.extend(p.choices if p.choices is not None else [p.high])
    return list(dict.fromkeys(values))


def probe_points(space: SearchSpace) -> list[dict[str, Any]]:
    """The params each probe runs with: every batch size (:func:`batch_sizes`) x every ``input_size``
    of the space (``None``: the run's size), at the largest ``context_slices`` it can draw."""
    sizes = _values(space, "input_size") or [None]
    contexts = [int(k) for k in _values(space, "context_slices") if k is not None]
    extra = {"context_slices": max(contexts)} if contexts else {}
    points = []
    for b in batch_sizes(space):
        for size in sizes:
            point = {"batch_size": b, **extra}
            if "input_size" in families.get(space.family).default_params():
                point["input_size"] = size
            points.append(point)
    return points


def point_key(family: str, params: Mapping[str, Any], spec: Any) -> tuple[str, int, int, int]:
    """The measurement key of a trial with ``params``: (family, batch size, its input size, channels)."""
    model_spec = families.get(family).model_spec(params, spec)
    return _key(family, int(params["batch_size"]), model_spec.image_size, model_spec.in_channels)


def _key(family: str, batch: int, size: int, channels: int) -> tuple[str, int, int, int]:
    return (family, int(batch), int(size), int(channels))


def read_probes(run: RunDir) -> list[dict[str, Any]]:
    """The run's GPU-memory measurements (``[]`` before any)."""
    import json

    try:
        doc = json.loads(run.gpu_memory_file.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise RunError(
            f"{run.gpu_memory_file}: unreadable GPU-memory record ({exc}); delete it to re-measure"
        ) from None
    return list(doc.get("probes", []))


def _write(run: RunDir, probes: list[dict[str, Any]], plans: Mapping[str, dict[str, Any]]) -> None:
    import json

    old = {}
    if run.gpu_memory_file.is_file():
        old = json.loads(run.gpu_memory_file.read_text()).get("plans", {})
    doc = {"format": FORMAT, "probes": probes, "plans": {**old, **plans}}
    atomic_write_text(run.gpu_memory_file, json.dumps(doc, indent=1, sort_keys=True) + "\n")


def measured_need(run: RunDir, family: str, batch: Any, size: int, channels: int) -> int | None:
    """The measured peak bytes of ``family`` at ``batch`` and ``size``, if the run measured it."""
    try:
        want = _key(family, int(batch), size, channels)
        probes = read_probes(run)
    except (TypeError, ValueError, RunError):
        return None
    for p in probes:
        if _key(p["family"], p["batch_size"], p["image_size"], p["in_channels"]) == want:
            return int(p["peak_bytes"])
    # probes run at the space's largest context: the bound of a trial with fewer input channels
    bounds = [
        int(p["peak_bytes"])
        for p in probes
        if _key(p["family"], p["batch_size"], p["image_size"], 0)[:3] == want[:3]
        and p["in_channels"] >= channels
    ]
    return min(bounds) if bounds else None


def probe_on_gpu(ref: Mapping[str, Any], points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Measure the peak of each probe point (:func:`probe_points`) on this process's GPU (the body of the
    probe's Ray task), the model built at the input it will train at."""
    import torch

    from dvt_search.engine.memory import gpu_memory_bytes, probe_peak_bytes

    from .setup import TrialContext

    ctx = TrialContext.load(ref)
    family = families.get(ctx.family)
    if ctx.spec is None:
        raise RuntimeError(f"{ctx.run.run_file}: no data spec recorded; the driver computes it first")
    total, name = gpu_memory_bytes("cuda")
    out = []
    for point in points:
        b = int(point["batch_size"])
        model = family.build(dict(point), ctx.spec)
        peak = probe_peak_bytes(model, b, device="cuda", steps=PROBE_STEPS)
        out.append(
            {
                "family": ctx.family,
                "batch_size": b,
                "image_size": int(model.spec.image_size),
                "in_channels": int(model.spec.in_channels),
                "gpu_name": name,
                "gpu_bytes": total,
                "peak_bytes": peak,
                "steps": PROBE_STEPS,
                "torch": torch.__version__,
            }
        )
        del model
        torch.cuda.empty_cache()
    return out


def _share_key(text: str, size: int) -> tuple[int, int]:
    """``"8@256"`` -> (8, 256); an older record's ``"8"`` -> (8, the run's ``size``)."""
    batch, _, at = str(text).partition("@")
    return int(batch), int(at) if at else int(size)


@dataclass(frozen=True)
class GpuPlan:
    """The GPU share of each (batch size, input size) of one family's trials; called by Tune with a trial's
    config.

    Attributes:
        family: the family.
        cpus: CPUs each trial reserves besides its GPU share.
        shares: ``(batch size, input size)`` -> GPU fraction (a bare batch size: any input size).
        spec: the run's data spec (a trial's input size comes from its params through the family's
            ``model_spec``); ``None``: the input size is not looked at.
    """

    family: str
    cpus: float
    shares: Mapping[Any, float] = field(default_factory=dict)
    spec: Any = None

    @property
    def largest(self) -> float:
        return max(self.shares.values())

    @property
    def smallest(self) -> float:
        return min(self.shares.values())

    def share(self, params: Mapping[str, Any] | None) -> float:
        """The share of a trial with ``params`` (the largest when its batch/input size was not measured)."""
        params = dict(params or {})
        batch = params.get("batch_size")
        if batch is None:
            batch = families.get(self.family).default_params().get("batch_size")
        try:
            batch = int(batch)
        except (TypeError, ValueError):
            return self.largest
        if self.spec is not None:
            try:
                size = (
                    families.get(self.family)
                    .model_spec({**params, "batch_size": batch}, self.spec)
                    .image_size
                )
            except (KeyError, TypeError, ValueError):
                return self.largest
            if (batch, int(size)) in self.shares:
                return float(self.shares[(batch, int(size))])
        return float(self.shares.get(batch, self.largest))

    def __call__(self, config: Mapping[str, Any]) -> Any:
        """Tune's per-trial resource request (``tune.with_resources``)."""
        from ray.tune import PlacementGroupFactory

        return PlacementGroupFactory([{"CPU": float(self.cpus), "GPU": self.share(config.get("params"))}])

    @classmethod
    def load(cls, run: RunDir, family: str, cpus: float, spec: Any = None) -> GpuPlan | None:
        """The plan the driver recorded for ``family`` (``None`` when it made none)."""
        import json

        try:
            doc = json.loads(run.gpu_memory_file.read_text())
        except (OSError, ValueError):
            return None
        plan = doc.get("plans", {}).get(family)
        if not plan:
            return None
        size = int(plan.get("image_size", 0))
        shares = {_share_key(k, size): float(v) for k, v in plan["shares"].items()}
        return cls(family, cpus, shares, spec)


def check_auto(config: Any, capacity: Any) -> None:
    """Raise :class:`RunError` when the run asks ``--gpus-per-trial auto`` of a cluster without GPUs."""
    if getattr(config.resources, "gpus_auto", False) and capacity.largest("GPU") < 1:
        types = "; ".join(t.describe() for t in capacity.node_types) or "none"
        raise RunError(
            f"--gpus-per-trial auto measures GPU memory on a GPU node, but no node type has a GPU "
            f"({capacity.source}: {types}); give a number (0 for CPU trials) or add GPU nodes"
        )


def plan_gpus(ctx: Any, space: SearchSpace, capacity: Any) -> GpuPlan | None:
    """Measure (once) and plan the GPU shares of ``ctx``'s family (``None``: not ``auto`` / no GPU use).

    Raises:
        RunError: no GPU node exists, or a batch size does not fit a whole GPU.
    """
    import ray

    res = ctx.config.resources
    if not getattr(res, "gpus_auto", False) or ctx.needs.gpus <= 0:
        return None
    check_auto(ctx.config, capacity)
    spec = ctx.spec
    run = ctx.run
    probes = read_probes(run)
    known = {_key(p["family"], p["batch_size"], p["image_size"], p["in_channels"]): p for p in probes}
    points = probe_points(space)
    keys = [point_key(ctx.family, pt, spec) for pt in points]
    missing = [pt for pt, k in zip(points, keys, strict=True) if k not in known]
    if missing:
        what = ", ".join(f"batch {k[1]} at {k[2]}^2 x {k[3]} ch" for k in keys if k not in known)
        print(f"[{ctx.family}] measuring GPU memory: {what}", flush=True)
        task = ray.remote(num_gpus=1, num_cpus=1, max_retries=0)(probe_on_gpu)
        new = ray.get(task.remote(ctx.ref(), missing))
        probes.extend(new)
        known.update({_key(p["family"], p["batch_size"], p["image_size"], p["in_channels"]): p for p in new})
    shares: dict[tuple[int, int], float] = {}
    for key in keys:
        p = known[key]
        _, b, size, _ = key
        what = f"{ctx.family} at batch size {b}, {size}x{size} input"
        try:
            shares[(b, size)] = gpu_share(
                p["peak_bytes"],
                p["gpu_bytes"],
                margin=DEFAULT_MARGIN,
                overhead_bytes=DEFAULT_OVERHEAD_BYTES,
                max_trials=DEFAULT_MAX_TRIALS,
                what=what,
            )
        except PackingError as exc:
            _write(run, probes, {})
            raise RunError(f"--gpus-per-trial auto: {exc}") from None
    record = {
        "shares": {f"{b}@{size}": s for (b, size), s in shares.items()},
        "margin": DEFAULT_MARGIN,
        "overhead_bytes": DEFAULT_OVERHEAD_BYTES,
        "image_size": spec.image_size,
    }
    _write(run, probes, {ctx.family: record})
    text = ", ".join(
        f"batch {k[1]} at {k[2]}^2: {known[k]['peak_bytes'] / GIB:.2f} GiB -> {shares[(k[1], k[2])]:g} GPU"
        for k in keys
    )
    print(f"[{ctx.family}] GPU shares ({DEFAULT_MARGIN:.0%} margin): {text}", flush=True)
    return GpuPlan(ctx.family, float(ctx.needs.cpus), shares, spec)
