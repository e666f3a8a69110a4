"""``--gpus-per-trial auto`` without a GPU: the batch sizes probed, the per-trial resource callable Tune
calls, and a plan built from measurements a GPU recorded in the run directory (so it is never re-measured).

The measurements below are what ``probe_on_gpu`` writes (H100 80GB, peak of 3 real steps); the shares
follow from :func:`dvt_search.engine.memory.gpu_share`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dvt_testkit_runtime import report_assigned_resources
from ray.tune import PlacementGroupFactory

from dvt_search.data.spec import DataSpec, InputSpec
from dvt_search.rundir import RunDir
from dvt_search.rundir.config import BudgetConfig, DataConfig, ResourceConfig, RunConfig
from dvt_search.runtime.capacity import from_launcher_config
from dvt_search.runtime.options import RunError, SearchOptions, resolve_gpus
from dvt_search.runtime.packing import GpuPlan, batch_sizes, measured_need, plan_gpus, point_key, probe_points
from dvt_search.runtime.setup import TrialContext
from dvt_search.search.space import load_family_space, parse_space

H100 = 85_029_158_912
GIB = 1024**3
SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


def test_batch_sizes_cover_choices_fixed_ranges_and_the_paper_value() -> None:
    assert batch_sizes(load_family_space(SPACES, "multitask_unet")) == [8, 10, 16, 32]
    ranged = parse_space(
        {"family": "vgg16", "params": {"batch_size": {"type": "int", "low": 4, "high": 24}}}, family="vgg16"
    )
    assert batch_sizes(ranged) == [10, 24]  # the paper's 10, and the range's top bounds the rest
    fixed = parse_space({"family": "vgg16", "fixed": {"batch_size": 16}}, family="vgg16")
    assert batch_sizes(fixed) == [10, 16]


def test_plan_is_called_per_trial_config() -> None:
    plan = GpuPlan("multitask_unet", 4.0, {8: 0.125, 10: 0.125, 32: 0.3333})
    pgf = plan({"params": {"batch_size": 32, "lr": 1e-3}, "run": {}})
    assert isinstance(pgf, PlacementGroupFactory) and pgf.bundles == [{"CPU": 4.0, "GPU": 0.3333}]
    assert plan({"params": {"batch_size": 8}}).bundles == [{"CPU": 4.0, "GPU": 0.125}]
    assert plan.share({"batch_size": 12}) == 0.3333  # not measured: the largest share (safe)
    assert plan.share({}) == 0.125  # the family's default batch size (10)
    assert (plan.smallest, plan.largest) == (0.125, 0.3333)


def test_gpus_option() -> None:
    def opts(value) -> SearchOptions:
        return SearchOptions(manifest=Path("m"), storage=Path("r"), gpus_per_trial=value)

    assert resolve_gpus(opts("auto")) == (1.0, True) and resolve_gpus(opts(0.25)) == (0.25, False)
    for bad in (-1, "half"):
        with pytest.raises(RunError, match="number >= 0 or auto"):
            resolve_gpus(opts(bad))


def _ctx(tmp_path: Path, family: str) -> TrialContext:
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    config = RunConfig(
        families=(family,),
        data=DataConfig(manifest="m", input=InputSpec(512, [[40.0, 400.0]])),
        budget=BudgetConfig(4, 3),
        resources=ResourceConfig(cpus_per_trial=4.0, gpus_per_trial=1.0, gpus_auto=True),
    )
    return TrialContext.derive(run, family, config, DataSpec(image_size=512).to_dict())


def _record(
    run: RunDir, family: str, peaks_gib: dict[int, float], channels: int = 5, size: int = 512
) -> None:
    """Probes as ``probe_on_gpu`` records them: at the space's largest context (2: 5 channels)."""
    probes = [
        {"family": family, "batch_size": b, "image_size": size, "in_channels": channels, "gpu_name": "NVIDIA H100 80GB HBM3",
         "gpu_bytes": H100, "peak_bytes": int(p * GIB), "steps": 3, "torch": "2.11"}
        for b, p in peaks_gib.items()
    ]  # fmt: skip
    run.gpu_memory_file.write_text(json.dumps({"probes": probes}))


GPU_NODES = from_launcher_config(
    {"available_node_types": {"gpu": {"resources": {"CPU": 16, "GPU": 1}, "max_workers": 2}}}, "test config"
)


def test_plan_from_recorded_measurements_is_not_measured_again(tmp_path) -> None:
    ctx = _ctx(tmp_path, "multitask_unet")
    _record(ctx.run, "multitask_unet", {8: 2.4, 10: 2.9, 16: 4.5, 32: 9.0})
    plan = plan_gpus(ctx, load_family_space(SPACES, "multitask_unet"), GPU_NODES)  # no Ray task: all known
    # per trial: peak x 1.15 + 0.75 GiB -> 3.51 / 4.09 / 5.93 / 11.1 GiB of 79.19: 22 (capped at 8) / 19
    # (8) / 13 (8) / 7 trials per GPU
    assert plan is not None and plan.shares == {
        (8, 512): 0.125,
        (10, 512): 0.125,
        (16, 512): 0.125,
        (32, 512): 0.1428,
    }
    assert GpuPlan.load(ctx.run, "multitask_unet", 4.0, ctx.spec) == plan
    assert measured_need(ctx.run, "multitask_unet", 32, 512, 5) == int(9.0 * GIB)
    assert measured_need(ctx.run, "multitask_unet", 32, 512, 1) == int(9.0 * GIB)  # fewer channels: bounded
    assert measured_need(ctx.run, "multitask_unet", 32, 256, 1) is None


def test_a_batch_size_that_never_fits_stops_the_run(tmp_path) -> None:
    ctx = _ctx(tmp_path, "densenet161")
    _record(ctx.run, "densenet161", {8: 20.0, 10: 25.0, 16: 40.0, 32: 75.0})
    with pytest.raises(RunError, match=r"densenet161 at batch size 32, 512x512 input needs 87\.\d+ GiB"):
        plan_gpus(ctx, load_family_space(SPACES, "densenet161"), GPU_NODES)


def test_no_plan_without_auto_or_for_cpu_families(tmp_path) -> None:
    ctx = _ctx(tmp_path, "sift_bow_svm")  # a CPU family: its trials hold no GPU even under auto
    assert plan_gpus(ctx, load_family_space(SPACES, "sift_bow_svm"), GPU_NODES) is None


@pytest.mark.ray
@pytest.mark.slow
def test_tune_reserves_each_trials_own_share(tmp_path) -> None:
    """Ray 2.60 calls the plan per trial: a node advertising one GPU (no CUDA needed to schedule) gives
    the batch-8 trial 1/8 and the batch-32 trial 1/2 of it."""
    import ray
    from ray import tune

    if ray.is_initialized():
        ray.shutdown()  # another topology: the next module's fixture starts its own instance again
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING")
    try:
        plan = GpuPlan("multitask_unet", 0.5, {8: 0.125, 32: 0.5})
        tuner = tune.Tuner(
            tune.with_resources(report_assigned_resources, plan),
            param_space={"params": {"batch_size": tune.grid_search([8, 32])}},
            run_config=tune.RunConfig(storage_path=str(tmp_path), name="pack", verbose=0),
        )
        results = tuner.fit()
        got = sorted((int(r.metrics["batch"]), float(r.metrics["gpu"])) for r in results)
    finally:
        ray.shutdown()
    assert got == [(8, 0.125), (32, 0.5)]


def test_probes_run_at_the_input_each_trial_trains_at(tmp_path) -> None:
    """A space with its own ``input_size`` choices is probed at each of them (not at the run's --size) and
    at its largest context; a trial's share is the one of its batch size *and* input size."""
    space = parse_space(
        {
            "family": "vgg16",
            "params": {
                "batch_size": {"type": "categorical", "choices": [8, 16]},
                "input_size": {"type": "categorical", "choices": [128, 256]},
                "context_slices": {"type": "categorical", "choices": [0, 1]},
            },
        },
        family="vgg16",
    )
    points = probe_points(space)
    assert {(p["batch_size"], p["input_size"], p["context_slices"]) for p in points} == {
        (b, s, 1) for b in (8, 10, 16) for s in (None, 128, 256)
    }
    ctx = _ctx(tmp_path, "vgg16")
    keys = {point_key("vgg16", p, ctx.spec) for p in points}
    assert {(k[1], k[2], k[3]) for k in keys} == {(b, s, 3) for b in (8, 10, 16) for s in (512, 128, 256)}
    probes = [
        {"family": "vgg16", "batch_size": b, "image_size": s, "in_channels": 3, "gpu_bytes": H100,
         "peak_bytes": int(b * s * s * 4800)}  # ~ activations x batch: 16 at 512^2 -> 20 GB
        for _, b, s, _ in keys
    ]  # fmt: skip
    ctx.run.gpu_memory_file.write_text(json.dumps({"probes": probes}))
    plan = plan_gpus(ctx, space, GPU_NODES)
    assert plan is not None
    small = plan.share({"batch_size": 16, "input_size": 128})
    big = plan.share({"batch_size": 16})  # the run's 512^2
    assert small == plan.shares[(16, 128)] < big == plan.shares[(16, 512)]
    assert GpuPlan.load(ctx.run, "vgg16", 4.0, ctx.spec).share({"batch_size": 16, "input_size": 128}) == small


def test_gpu_seconds_book_the_share_each_trial_reserved(tmp_path) -> None:
    from dvt_search.runtime.callbacks import RecordsCallback

    plan = GpuPlan("multitask_unet", 4.0, {8: 0.125, 32: 0.5})
    kw = dict(budget=3, metric="val_auc", mode="max", cpus=4.0, gpus=1.0)
    auto = RecordsCallback(tmp_path, "multitask_unet", **kw, gpu_plan=plan, workers=2)
    assert auto.trial_gpus({"batch_size": 8}) == 0.25 and auto.trial_gpus({"batch_size": 32}) == 1.0
    assert RecordsCallback(tmp_path, "multitask_unet", **kw).trial_gpus({"batch_size": 8}) == 1.0
