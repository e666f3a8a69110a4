"""A Ray Train DDP trial (2 gloo workers) inside Tune trains exactly like one process on the union batches.

DDP with ``DistributedSampler`` gives rank ``r`` the permutation's elements ``r, r + 2, ...``; step ``k``
of the two ranks together covers permutation positions ``[2bk, 2bk + 2b)``, and averaging the two ranks'
mean-loss gradients equals the gradient of the mean loss over that union. A single process fed exactly
those union batches (batch ``2b``) must therefore report the same per-epoch losses, for a model without
batch statistics or dropout (the ``tiny_cnn`` test family).
"""

from __future__ import annotations

import time

import dvt_test_plugins  # noqa: F401  (registers the test families)
import pytest
import ray
import torch
from dvt_testkit_runtime import PLUGIN, write_spaces
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from dvt_search import families
from dvt_search.data.dataset import build_datasets
from dvt_search.families.base import DataSpec, FitData
from dvt_search.rundir.layout import RunDir

BATCH, EPOCHS, WORKERS = 4, 2, 2


def union_batches(n: int, epoch: int) -> list[list[int]]:
    """The index batches two DDP ranks see together at each step of ``epoch``."""
    per_rank = []
    for rank in range(WORKERS):
        sampler = DistributedSampler(range(n), num_replicas=WORKERS, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(epoch)
        per_rank.append(list(sampler))
    steps = -(-len(per_rank[0]) // BATCH)
    return [[i for r in per_rank for i in r[k * BATCH : (k + 1) * BATCH]] for k in range(steps)]


@pytest.mark.ray
@pytest.mark.slow
def test_two_worker_ddp_trial_matches_single_process(ray_2_cpus, phantom, tmp_path) -> None:
    from dvt_search.runtime.driver import SearchOptions, run_search

    fixed = {"lr": 0.05, "batch_size": BATCH, "schedule": "none", "seed": 3}
    opts = SearchOptions(
        manifest=phantom,
        storage=tmp_path / "runs",
        name="ddp",
        families=["tiny_cnn"],
        trials=1,
        max_epochs=EPOCHS,
        size=32,
        space_dir=write_spaces(tmp_path / "spaces", {"tiny_cnn": {"fixed": fixed}}),
        plugins=[PLUGIN],
        train_workers=WORKERS,
        cpus_per_trial=1,
        progress_every_s=1e9,
        include_dashboard=False,
    )
    run_search(opts)
    # the Train workers' placement group is freed even though Tune ended the trial's actor (no dashboard here)
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0.0) < 2.0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0.0) == 2.0
    run = RunDir(tmp_path / "runs" / "ddp")
    info = run.read_info()
    assert info.config.resources.trainer == "ray-train"
    (rec,) = run.trials("tiny_cnn")
    assert rec.status == "completed" and rec.epochs == EPOCHS and rec.has_checkpoint
    assert rec.cpu_s == pytest.approx(rec.wall_s * WORKERS)
    ddp = run.read_epochs("tiny_cnn", rec.trial_id)
    assert [r["epoch"] for r in ddp] == list(range(1, EPOCHS + 1))

    torch.set_num_threads(1)
    data = build_datasets(phantom, run.path / "splits.json", size=32)
    train = data["train"]
    model = families.get("tiny_cnn").build(
        {**rec.params, "max_epochs": EPOCHS}, DataSpec.from_dict(info.state.spec)
    )
    single = []
    for epoch in range(EPOCHS):
        batches = union_batches(len(train), epoch)
        reports = model.fit(
            FitData(train, data["val"]),
            epoch + 1,
            device="cpu",
            prepare_loader=lambda _loader, b=batches: DataLoader(train, batch_sampler=b),
        )
        single += [r.metrics for r in reports]
    for d, s in zip(ddp, single, strict=True):
        for key in ("train_loss", "val_loss", "val_auc"):
            assert d[key] == pytest.approx(s[key], rel=1e-4, abs=1e-6), key
    assert single[0]["train_loss"] != pytest.approx(single[1]["train_loss"], rel=1e-3)  # it did learn
