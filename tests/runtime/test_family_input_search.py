"""A real search in which two families choose their own network input (size, slice context) in one run."""

from __future__ import annotations

import json

import pytest
import torch
from dvt_testkit_runtime import write_spaces

from dvt_search import families
from dvt_search.data.dataset import build_datasets, spec_for
from dvt_search.rundir.layout import RunDir

SPACES = {
    # context searched (the paper trial runs 0, so one trial = the paper point): fixed here to 2 via `fixed`
    "vgg16": {"params": {}, "fixed": {"batch_size": 8, "head": "gap", "input_size": 32, "context_slices": 2}},
    "multitask_unet": {"params": {}, "fixed": {"batch_size": 8}},
}


@pytest.mark.ray
@pytest.mark.slow
def test_search_trains_each_family_at_its_own_input(ray_2_cpus, phantom, tmp_path, capsys) -> None:
    """vgg16 at 32^2 with ±2 context slices beside multitask_unet at the run's 64^2, in one search.

    Catches: trials built with the run's spec whatever their params say (vgg16 at 64^2, one slice), a
    vein fraction not re-measured at the family's own size, and a multitask model pulled to another
    family's size (the per-process dataset / spec caches are shared by the families of a run).
    """
    from dvt_search.runtime.driver import SearchOptions, run_search

    torch.set_num_threads(1)
    opts = SearchOptions(
        manifest=phantom,
        storage=tmp_path / "runs",
        name="inputs",
        families=["vgg16,multitask_unet"],
        trials=1,
        max_epochs=1,
        size=64,
        space_dir=write_spaces(tmp_path / "spaces", SPACES),
        progress_every_s=1e9,
        include_dashboard=False,
    )
    run_search(opts)
    capsys.readouterr()
    run = RunDir(tmp_path / "runs" / "inputs")
    info = run.read_info()
    train = build_datasets(phantom, run.splits_file, size=64)["train"]
    for fam, size, k in (("vgg16", 32, 2), ("multitask_unet", 64, 0)):
        (rec,) = run.trials(fam)
        assert rec.status == "completed" and rec.has_checkpoint
        meta = json.loads((run.checkpoint_dir(fam, rec.trial_id) / "meta.json").read_text())
        assert (meta["spec"]["image_size"], meta["spec"]["context_slices"]) == (size, k)
        want = spec_for(train.with_input(size=size), seed=info.config.seed).vein_fraction
        assert meta["spec"]["vein_fraction"] == pytest.approx(want)
        model = families.get(fam).load(run.checkpoint_dir(fam, rec.trial_id))
        assert model.module.stem.index.numel() == 3 * (2 * k + 1)  # replicate stem: 3 channels per slice
