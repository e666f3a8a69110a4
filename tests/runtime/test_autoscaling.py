"""A search on a real autoscaler: Ray's ``fake_multinode`` provider, an empty cluster with a ``CPU: 0`` head.

The head runs ``ray start --head --autoscaling-config FAKE.yaml`` with ``RAY_FAKE_CLUSTER=1``: its autoscaler
(a real ``monitor.py``) launches fake worker nodes (real raylets on this machine) of the YAML's node types
when trials wait for resources. The driver joins with ``--address`` and reads the same YAML
(``--autoscaling-config``), so concurrency and feasibility come from what the cluster can become, not
from the 0 CPU / 0 GPU alive at connect. Every process the test starts carries a marker in its
environment and is killed by id at the end (never ``ray stop``, which would stop every Ray of this user);
the head keeps its files in a private ``RAY_TMPDIR``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from dvt_testkit_cluster import MARKER_ENV, free_ports, marked_pids
from dvt_testkit_runtime import PLUGIN, write_spaces

from dvt_search.rundir.layout import RunDir

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def fake_config(gcs_address: str) -> dict:
    """A fake-multinode cluster: CPU: 0 head, 2 CPU workers of 2 CPUs, 1 GPU worker (2 CPUs, 1 fake GPU)."""
    empty: list = []
    return {
        "cluster_name": "dvt-fake",
        "max_workers": 3,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 1,
        # Fake nodes share this machine's IP and are started in place: no updater (SSH, setup) may run.
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "cpu_worker": {"resources": {"CPU": 2}, "node_config": {}, "min_workers": 0, "max_workers": 2},
            "gpu_worker": {
                "resources": {"CPU": 2, "GPU": 1},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 1,
            },
        },
        "head_node_type": "ray.head.default",
        "file_mounts": {},
        "cluster_synced_files": empty,
        "file_mounts_sync_continuously": False,
        "rsync_exclude": empty,
        "rsync_filter": empty,
        "initialization_commands": empty,
        "setup_commands": empty,
        "head_setup_commands": empty,
        "worker_setup_commands": empty,
        "head_start_ray_commands": empty,
        "worker_start_ray_commands": empty,
    }


@pytest.fixture(scope="module")
def fake_cluster(tmp_path_factory, _runtime_env):
    """Start the head of a fake autoscaling cluster; yields ``(address, config path)``."""
    import ray
    from ray._private.services import get_node_ip_address

    ray.shutdown()  # a module-shared local Ray would only compete for the 2 cores
    root = tmp_path_factory.mktemp("fake")
    (port,) = free_ports(1)
    address = f"{get_node_ip_address()}:{port}"
    config = root / "fake.yaml"
    config.write_text(yaml.safe_dump(fake_config(address)))
    marker = os.urandom(8).hex()
    # A private Ray temp dir (short: Unix socket paths < 108 bytes): `ray start --head` writes the
    # machine-wide /tmp/ray/ray_current_cluster otherwise, and a later plain ray.init() would try to join
    # this (by then dead) head.
    ray_tmp = Path(tempfile.mkdtemp(prefix="dvtf", dir="/tmp"))
    # The autoscaler's update loop every 1 s (Ray's default 5 s): nodes are asked for sooner, same decisions.
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", MARKER_ENV: marker, "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_TMPDIR": str(ray_tmp), "AUTOSCALER_UPDATE_INTERVAL_S": "1"}  # fmt: skip
    ray_bin = str(Path(sys.executable).parent / "ray")
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", f"--port={port}", "--num-cpus=0", "--num-gpus=0",
         f"--autoscaling-config={config}", "--include-dashboard=false", "--disable-usage-stats"],
        env=env, stdout=(root / "head.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for_head(ray_bin, address, env, head)
        yield address, config, env
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while (left := marked_pids(marker)) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL if time.monotonic() > deadline - 20 else signal.SIGTERM)
            time.sleep(0.5)
        head.wait(timeout=30)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _wait_for_head(
    ray_bin: str, address: str, env: dict, head: subprocess.Popen, timeout: float = 180
) -> None:
    """Until ``ray status`` answers from the head (a driver started earlier fails to join, under load)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and head.poll() is None:
        probe = subprocess.run([ray_bin, "status", f"--address={address}"], env=env, capture_output=True,
                               timeout=120)  # fmt: skip
        if probe.returncode == 0:
            return
        time.sleep(2)
    raise AssertionError(f"the fake cluster's head at {address} did not come up within {timeout:.0f}s")


def _search(env, address, config, phantom, spaces, runs, name, *extra) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dvt_search.cli", "search", "--address", address,
           "--autoscaling-config", str(config), "--data", str(phantom), "--size", "32",
           "--storage", str(runs), "--name", name, "--space-dir", str(spaces), "--plugin", PLUGIN,
           "--progress-every", "1000", *extra]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420)


def test_a_trial_no_node_type_can_hold_is_refused_on_an_autoscaling_cluster(
    fake_cluster, phantom, tmp_path
) -> None:
    """No node type has 2 GPUs: a clear error, before the run directory exists, no traceback.

    (A one-family search on this cluster is covered by the families-at-once test below: both start on the
    empty cluster and read its capacity from the autoscaler config; the capacity arithmetic per node type,
    e.g. 2-CPU trials on 2-CPU nodes, is unit-tested in test_capacity.py.)
    """
    address, config, env = fake_cluster
    spaces = write_spaces(tmp_path / "spaces", {"tiny_cnn": {"fixed": {"schedule": "none"}}})
    runs = tmp_path / "runs"
    bad = _search(env, address, config, phantom, spaces, runs, "gpu2", "--family", "tiny_cnn",
                  "--gpus-per-trial", "2", "--trials", "1", "--max-epochs", "1")  # fmt: skip
    assert bad.returncode == 1, bad.stdout[-2000:] + bad.stderr[-3000:]
    assert "tiny_cnn: a trial needs {GPU: 2}" in bad.stderr and "no node type has GPU" in bad.stderr
    assert "Traceback" not in bad.stderr and not (runs / "gpu2").exists()


FAMS = ("scripted", "scripted_gpu", "scripted_gpu_b")


def test_all_families_at_once_on_an_empty_autoscaling_cluster(fake_cluster, phantom, tmp_path) -> None:
    """A CPU-only and two GPU families searched at once: the GPU trials can only run on a worker the autoscaler
    adds (the head has no CPU and no GPU), the CPU family's trials run beside them on the CPU workers, and
    the two GPU families share one Tune experiment (``runtime/group.py``) whose trials wait for that worker."""
    address, config, env = fake_cluster
    space = {"params": {"quality": {"type": "float", "low": 0, "high": 1}}, "fixed": {"epoch_s": 0.5}}
    spaces = write_spaces(tmp_path / "spaces", dict.fromkeys(FAMS, space))
    runs = tmp_path / "runs"
    done = _search(env, address, config, phantom, spaces, runs, "all", "--family", ",".join(FAMS),
                   "--cpus-per-trial", "1", "--gpus-per-trial", "1", "--trials", "3", "--max-epochs", "2",
                   "--budget", "scripted_gpu_b=2", "--reduction-factor", "2")  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "searching 3 families at once: scripted, scripted_gpu, scripted_gpu_b" in done.stdout
    assert "[scripted_gpu+scripted_gpu_b] one Tune experiment" in done.stdout
    assert f"cluster capacity from autoscaler config {config}" in done.stdout
    run = RunDir(runs / "all")
    family_runs = run.read_info().state.family_runs
    # From the YAML: 1 GPU worker; the CPU family gets the CPUs beside it (2 x 2 CPU workers + 2 - 1).
    assert (
        family_runs["scripted_gpu"]["max_concurrent"] == 1 and family_runs["scripted"]["max_concurrent"] == 5
    )
    for fam, n in {"scripted": 3, "scripted_gpu": 3, "scripted_gpu_b": 2}.items():
        records = run.trials(fam)
        assert len(records) == n and all(r.final for r in records), [(r.status, r.error) for r in records]
    assert run.tune_groups() == [("scripted_gpu", "scripted_gpu_b")]
    assert sorted(run.read_info().state.finished_families) == list(FAMS)
