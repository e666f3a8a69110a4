"""Concurrency and feasibility from what the cluster can become (node types x max workers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dvt_testkit_runtime import PLUGIN, write_spaces

from dvt_search.families.base import TrialNeeds
from dvt_search.runtime.capacity import from_config_file, from_launcher_config
from dvt_search.runtime.options import RunError

REPO = Path(__file__).resolve().parents[2]

#: The shape of the README's AWS cluster: CPU: 0 head, GPU workers (8 CPU, 1 GPU) x4, CPU workers (16) x2.
CLOUD = REPO / "cluster" / "cluster.yaml"


def _gpu(gpus: float = 1.0, cpus: float = 1.0, workers: int = 1) -> TrialNeeds:
    return TrialNeeds(budget=3, trainer="ray-train" if workers > 1 else "direct", workers=workers,
                      cpus=cpus, gpus=gpus)  # fmt: skip


def test_an_empty_autoscaling_cluster_is_sized_by_what_it_can_become() -> None:
    cap = from_config_file(CLOUD)
    assert cap is not None and cap.autoscaling
    assert cap.max_concurrent(_gpu(1.0)) == 4  # one per GPU worker, none on the CPU: 0 head
    assert cap.max_concurrent(_gpu(0.25)) == 16  # fractional GPUs pack four trials per GPU...
    assert cap.max_concurrent(_gpu(0.25, cpus=4.0)) == 8  # ... unless CPUs run out first
    assert cap.max_concurrent(TrialNeeds(budget=1, cpus=1.0)) == 4 * 8 + 2 * 16  # SIFT on every worker CPU
    assert cap.max_concurrent(_gpu(1.0, workers=2)) == 2  # a 2-GPU DDP trial takes two GPU nodes
    assert cap.largest("CPU") == 16.0


def test_a_trial_no_node_type_can_hold_is_an_error_naming_the_resource() -> None:
    cap = from_config_file(CLOUD)
    with pytest.raises(RunError, match=r"vgg16: a trial needs \{GPU: 2\} per trial .* no node type has GPU"):
        cap.check("vgg16", _gpu(2.0))
    with pytest.raises(RunError, match=r"no node type has CPU enough"):
        cap.check("sift_bow_svm", TrialNeeds(budget=1, cpus=32.0))
    with pytest.raises(RunError, match=r"holds at most 4 such process\(es\), 5 needed"):
        cap.check("vgg16", _gpu(1.0, workers=5))
    cap.check("vgg16", _gpu(1.0, workers=4))  # exactly what the cluster can hold: fine


def test_cluster_wide_max_workers_and_unknown_resources(tmp_path) -> None:
    doc = yaml.safe_load(CLOUD.read_text())
    doc["max_workers"] = 2  # the launcher never runs more than 2 workers in total
    cap = from_launcher_config(doc, "test")
    assert cap.max_concurrent(_gpu(1.0)) == 2
    del doc["available_node_types"]["gpu_worker"]["resources"]  # detected at start: unknown from the file
    assert from_launcher_config(doc, "test") is None
    # What `ray up` leaves on the head of a `local`-provider cluster (onprem.yaml): resources detected later.
    from ray.autoscaler._private.util import prepare_config

    onprem = prepare_config(yaml.safe_load((REPO / "cluster" / "onprem.yaml").read_text()))
    assert onprem["available_node_types"]["local.cluster.node"]["resources"] == {}
    assert from_launcher_config(onprem, "bootstrap") is None  # -> the nodes alive count instead
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(RunError, match="bad.yaml: not a Ray cluster config"):
        from_config_file(bad)


@pytest.mark.ray
def test_infeasible_trial_fails_before_the_run_directory_with_no_traceback(
    ray_2_cpus, phantom, tmp_path, capsys
):
    from dvt_search.cli import main

    spaces = write_spaces(tmp_path / "spaces", {"tiny_cnn": {"fixed": {"schedule": "none"}}})
    args = ["search", "--data", str(phantom), "--family", "tiny_cnn", "--storage", str(tmp_path / "runs"),
            "--name", "x", "--space-dir", str(spaces), "--plugin", PLUGIN, "--gpus-per-trial", "1",
            "--no-dashboard", "--trials", "1", "--max-epochs", "1"]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "tiny_cnn: a trial needs {GPU: 1}" in err and "no node type has GPU" in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs" / "x").exists()


def test_caps_of_families_searched_at_once() -> None:
    # The README's cluster: GPU workers {CPU: 8, GPU: 1} x4, CPU workers {CPU: 16} x2, a CPU: 0 head.
    cap = from_config_file(CLOUD)
    sift = TrialNeeds(budget=1, cpus=1.0)
    caps = cap.concurrent_caps({"sift": sift, "vgg16": _gpu(1.0, cpus=4.0), "densenet161": _gpu(0.5)})
    # GPU families may each fill the GPUs (their extra trials wait PENDING for the other's to end) ...
    assert caps["vgg16"] == 4 and caps["densenet161"] == 8
    # ... and SIFT gets the CPUs no GPU trial needs: the CPU workers, plus 8 - 4 per GPU node (vgg16 takes
    # 4 CPUs beside its one GPU, more than densenet161's two 0.5-GPU trials with 1 CPU each).
    assert caps["sift"] == 2 * 16 + 4 * (8 - 4)
    # Alone (no GPU family beside it), SIFT may use every CPU.
    assert cap.concurrent_caps({"sift": sift}) == {"sift": 4 * 8 + 2 * 16}
    # Ray Train families share the cluster: 2-worker 1-GPU trials, 2 fit at once, one each.
    two = cap.concurrent_caps({"a": _gpu(1.0, workers=2), "b": _gpu(1.0, workers=2)})
    assert two == {"a": 1, "b": 1}
