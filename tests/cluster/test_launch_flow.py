"""The user's cluster launch flow, for real, on a loopback "cluster" (see ``dvt_testkit_cluster`` (in ``tests/support``)).

``ray up`` (module fixture) -> the head runs with token auth and a loopback-only dashboard ->
``ray dashboard`` forwards it -> ``ray submit`` runs a Ray Tune job and ``cluster/entry.py`` runs
``dvt-search search`` on a tiny phantom -> ``ray rsync-down`` pulls the results (all of them, or what
``dvt-search pull`` run on the head through ``ray exec`` kept) -> ``ray down`` stops
every process the cluster started. The tests share one cluster and run in file order; the last one
takes it down.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import ray
from dvt_testkit_cluster import CLUSTER_DIR, REPO, LoopbackCluster, free_ports, marked_pids

from dvt_search.rundir import RunDir

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

HERE = Path(__file__).resolve().parent


def http_get(port: int, path: str, token: str | None) -> tuple[int, bytes]:
    """GET http://127.0.0.1:port/path, with a bearer token when given; returns (status, body)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def listening_addresses(port: int) -> set[str]:
    """IP addresses with a TCP socket listening on ``port`` in this network namespace (from /proc/net)."""
    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(address_hex)
            # /proc/net prints each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))
            found.add(str(ipaddress.ip_address(words)))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def search_run_dir(cluster: LoopbackCluster) -> Path:
    """Run directory of the search ``test_submit_entry_runs_dvt_search`` runs on the cluster."""
    return cluster.node.root / "runs" / "flow"


def test_head_runs_with_token_auth(loopback_cluster: LoopbackCluster) -> None:
    names = set(marked_pids(loopback_cluster.node.marker).values())
    assert {"gcs_server", "raylet"} <= names, names
    home = loopback_cluster.node.home
    assert (home / ".ray" / "auth_token").read_text() == loopback_cluster.token
    assert (home / "ray_bootstrap_config.yaml").exists()  # written by `ray up` for the head's autoscaler
    assert "dvt-search local cluster" in (home / ".bashrc").read_text()  # the setup command ran


def test_dashboard_answers_on_loopback_only(loopback_cluster: LoopbackCluster) -> None:
    port = loopback_cluster.dashboard_port
    status, body = http_get(port, "/api/version", loopback_cluster.token)
    assert status == 200
    assert json.loads(body)["ray_version"] == ray.__version__
    assert http_get(port, "/api/version", None)[0] == 401  # token auth is on
    addresses = listening_addresses(port)
    assert addresses and all(is_loopback(a) for a in addresses), addresses


def test_ray_dashboard_forwards_the_port(loopback_cluster: LoopbackCluster) -> None:
    (local_port,) = free_ports(1)
    cmd = [loopback_cluster.ray_bin, "dashboard", "-p", str(local_port)]
    cmd += ["--remote-port", str(loopback_cluster.dashboard_port), str(loopback_cluster.yaml)]
    # Own session: `ray dashboard` leaves its ssh child behind when killed alone.
    forward = subprocess.Popen(
        cmd,
        env=loopback_cluster.env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline and status != 200:
            try:
                status = http_get(local_port, "/api/version", loopback_cluster.token)[0]
            except OSError:
                time.sleep(0.5)
        assert status == 200
    finally:
        os.killpg(forward.pid, signal.SIGTERM)
        forward.wait(timeout=30)


def test_submit_tune_job_and_pull_results(loopback_cluster: LoopbackCluster, tmp_path: Path) -> None:
    remote = loopback_cluster.node.root / "tune_results"
    loopback_cluster.ray("submit", str(loopback_cluster.yaml), str(HERE / "tiny_tune.py"), "--", str(remote))
    assert (loopback_cluster.node.home / "tiny_tune.py").exists()  # `ray submit` copied it to ~ on the head
    pulled = tmp_path / "pulled"
    loopback_cluster.ray("rsync-down", str(loopback_cluster.yaml), f"{remote}/", str(pulled))
    summary = json.loads((pulled / "tiny_done.json").read_text())
    assert summary == {"n_trials": 2, "errors": 0, "best_x": 2.0, "best_score": 6.0, "nodes": 1}
    assert len(list((pulled / "tiny").glob("objective_*/result.json"))) == 2


def test_failing_job_fails_ray_submit(loopback_cluster: LoopbackCluster, tmp_path: Path) -> None:
    script = tmp_path / "fails.py"
    script.write_text("raise SystemExit(3)\n")
    done = loopback_cluster.ray("submit", str(loopback_cluster.yaml), str(script), check=False)
    assert done.returncode != 0


def test_submit_entry_runs_dvt_search(loopback_cluster: LoopbackCluster, tmp_path: Path) -> None:
    data = tmp_path / "phantom"
    phantom = [
        str(Path(loopback_cluster.ray_bin).parent / "dvt-search"),
        "data",
        "phantom",
        "--out",
        str(data),
    ]
    phantom += ["--patients", "6", "--size", "64", "--slices-per-scan", "8"]
    subprocess.run(phantom, check=True, capture_output=True, timeout=300)
    run_dir = search_run_dir(loopback_cluster)
    args = ["--data", str(data / "manifest.parquet"), "--family", "sift_bow_svm", "--trials", "2"]
    args += ["--max-epochs", "1", "--size", "64", "--storage", str(run_dir.parent), "--name", run_dir.name]
    loopback_cluster.ray("submit", str(loopback_cluster.yaml), str(CLUSTER_DIR / "entry.py"), "--", *args)

    pulled = tmp_path / "pulled"
    loopback_cluster.ray("rsync-down", str(loopback_cluster.yaml), f"{run_dir}/", str(pulled))
    assert RunDir(pulled).read_info().families == ["sift_bow_svm"]
    trials = [json.loads(p.read_text()) for p in (pulled / "trials" / "sift_bow_svm").glob("*/trial.json")]
    assert len(trials) == 2
    assert all(t["status"] in ("completed", "stopped") for t in trials), [t["status"] for t in trials]
    assert any((p.parent / "checkpoint").is_dir() for p in (pulled / "trials").glob("*/*/trial.json"))


def test_pull_winners_on_the_head(loopback_cluster: LoopbackCluster, tmp_path: Path) -> None:
    # The compact way back: `dvt-search pull` next to the storage, then rsync only what it kept.
    staged = loopback_cluster.node.root / "pulled_on_head"
    pull = f"dvt-search pull {search_run_dir(loopback_cluster)} --out {staged}"
    loopback_cluster.ray("exec", str(loopback_cluster.yaml), pull)
    local = tmp_path / "winners"
    loopback_cluster.ray("rsync-down", str(loopback_cluster.yaml), f"{staged}/", str(local))
    assert len(list(local.glob("trials/sift_bow_svm/*/trial.json"))) == 2
    checkpoints = [p for p in local.glob("trials/sift_bow_svm/*/checkpoint") if any(p.iterdir())]
    assert len(checkpoints) == 1  # the family's winner only
    assert not (local / "tune").exists()


def test_ray_down_stops_every_process(loopback_cluster: LoopbackCluster) -> None:
    assert marked_pids(loopback_cluster.node.marker)
    loopback_cluster.ray("down", "-y", str(loopback_cluster.yaml))
    deadline = time.monotonic() + 30
    while (left := marked_pids(loopback_cluster.node.marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"still running after `ray down`: {left}"
    with pytest.raises(OSError):
        http_get(loopback_cluster.dashboard_port, "/api/version", loopback_cluster.token)
