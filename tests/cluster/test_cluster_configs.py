"""The cluster YAMLs validate against Ray's own cluster-config schema; render, entry script, KubeRay job."""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from dvt_testkit_cluster import CLUSTER_DIR, REPO, load_render
from ray.autoscaler._private.util import prepare_config, validate_config

render = load_render()

#: Sample values for the required placeholders of each template (optional ones keep their defaults).
SAMPLE_VALUES = {
    "cluster.yaml": {
        "DVT_AWS_AMI": "ami-0123456789abcdef0",
        "DVT_EFS": "fs-0123abcd.efs.us-east-1.amazonaws.com",
    },
    "onprem.yaml": {
        "DVT_HEAD_IP": "10.1.2.10",
        "DVT_WORKER_IPS": "[10.1.2.11, 10.1.2.12]",
        "DVT_SSH_USER": "radiology",
        "DVT_SSH_KEY": "~/.ssh/id_ed25519",
    },
    "local.yaml": {"DVT_SSH_USER": "root", "DVT_SSH_KEY": "/tmp/key", "DVT_VENV": "/opt/dvt/.venv"},
}
TEMPLATES = sorted(SAMPLE_VALUES)


def rendered(name: str, **extra: str) -> dict[str, Any]:
    text = render.render_text((CLUSTER_DIR / name).read_text(), {**SAMPLE_VALUES[name], **extra}, name)
    return yaml.safe_load(text)


def commands(config: dict[str, Any]) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands")
    keys += ("head_start_ray_commands", "worker_start_ray_commands")
    return [cmd for key in keys for cmd in config.get(key, [])]


def test_every_template_is_covered() -> None:
    assert sorted(p.name for p in CLUSTER_DIR.glob("*.yaml") if p.name != "kuberay-rayjob.yaml") == TEMPLATES


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_validates_against_ray_schema(name: str) -> None:
    config = rendered(name)
    prepared = prepare_config(copy.deepcopy(config))  # what `ray up` does before validating
    validate_config(prepared)


@pytest.mark.parametrize("name", TEMPLATES)
def test_schema_check_rejects_a_broken_variant(name: str) -> None:
    config = prepare_config(rendered(name))
    config["auth"]["ssh_port"] = 2222  # not a Ray setting: the schema forbids unknown auth keys
    with pytest.raises(jsonschema.ValidationError):
        validate_config(config)


@pytest.mark.parametrize("name", TEMPLATES)
def test_dashboard_loopback_and_token_auth(name: str) -> None:
    config = rendered(name)
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    for cmd in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in cmd or '/ray" start' in cmd:
            assert "export RAY_AUTH_MODE=token;" in cmd, cmd
    assert "~/.ray/auth_token" in config["file_mounts"]


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_command_is_valid_bash(name: str) -> None:
    for cmd in commands(rendered(name)):
        check = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
        assert check.returncode == 0, f"{name}: {cmd!r}: {check.stderr}"


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_placeholder_is_documented_in_the_header(name: str) -> None:
    text = (CLUSTER_DIR / name).read_text()
    header = text[: text.index("\ncluster_name:")]
    undocumented = [p for p in render.placeholders(text) if p not in header]
    assert not undocumented, f"{name}: document {undocumented} in the header comment"


def test_cloud_template_autoscales_gpu_workers_from_zero() -> None:
    config = rendered("cluster.yaml", DVT_MAX_GPU_WORKERS="6")
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] == 6
    assert gpu["resources"]["GPU"] >= 1
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    assert config["file_mounts"]["~/dvt-search"] == "."


def test_onprem_template_lists_its_hosts() -> None:
    config = rendered("onprem.yaml")
    assert config["provider"] == {
        "type": "local",
        "head_ip": "10.1.2.10",
        "worker_ips": ["10.1.2.11", "10.1.2.12"],
    }


def test_render_defaults_overrides_and_shell_variables() -> None:
    text = 'a: ${DVT_A}\nb: ${DVT_B:-7}\nc: ${DVT_C:-}\nd: "$HOME ${PATH} $RAY_HEAD_IP"\n'
    out = yaml.safe_load(render.render_text(text, {"DVT_A": "x", "DVT_C": "z"}))
    assert out == {"a": "x", "b": 7, "c": "z", "d": "$HOME ${PATH} $RAY_HEAD_IP"}
    assert yaml.safe_load(render.render_text(text, {"DVT_A": "x"}))["c"] is None


def test_render_names_every_missing_placeholder() -> None:
    with pytest.raises(render.RenderError, match=r"cluster\.yaml: no value for DVT_AWS_AMI, DVT_EFS"):
        render.render_text((CLUSTER_DIR / "cluster.yaml").read_text(), {}, "cluster.yaml")


def test_render_cli_writes_the_file_and_fails_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "x" / "onprem.yaml"
    sets = [f"--set={k}={v}" for k, v in SAMPLE_VALUES["onprem.yaml"].items()]
    script = [sys.executable, str(CLUSTER_DIR / "render.py"), str(CLUSTER_DIR / "onprem.yaml")]
    done = subprocess.run([*script, "--out", str(out), *sets], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == out
    assert yaml.safe_load(out.read_text())["auth"]["ssh_user"] == "radiology"
    assert [p.name for p in out.parent.iterdir()] == ["onprem.yaml"]  # no temp file left behind
    failed = subprocess.run([*script, "--out", str(tmp_path / "y.yaml")], capture_output=True, text=True)
    assert failed.returncode == 2 and "DVT_HEAD_IP" in failed.stderr
    assert not (tmp_path / "y.yaml").exists()


def _load_entry():
    spec = importlib.util.spec_from_file_location("dvt_cluster_entry", CLUSTER_DIR / "entry.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_entry_adds_cluster_defaults_unless_given() -> None:
    entry = _load_entry()
    spaces = Path("/x/search_spaces")
    assert entry.search_argv(["--trials", "3"], spaces) == [
        "search",
        "--address",
        "auto",
        "--space-dir",
        "/x/search_spaces",
        "--trials",
        "3",
    ]
    assert entry.search_argv(["--address=10.0.0.1:6379", "--space-dir", "s"], spaces) == [
        "search",
        "--address=10.0.0.1:6379",
        "--space-dir",
        "s",
    ]
    assert entry.installed_space_dir() == REPO / "search_spaces"


def test_entry_runs_the_search_command() -> None:
    # Invalid budget: the search command rejects it before touching Ray, and entry returns its exit code.
    entry = _load_entry()
    assert entry.main(["--data", "m.parquet", "--storage", "runs", "--trials", "0"]) == 2


def test_kuberay_rayjob_manifest() -> None:
    job = yaml.safe_load((CLUSTER_DIR / "kuberay-rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", job["metadata"]["name"])
    spec = job["spec"]
    assert "cluster/entry.py" in spec["entrypoint"] and "--storage" in spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["authOptions"]["mode"] == "token"
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"]
    assert len(head) == 1 and head[0]["image"]
    groups = cluster["workerGroupSpecs"]
    assert groups and all(g["groupName"] and g["minReplicas"] <= g["maxReplicas"] for g in groups)
    gpu_limits = [
        c["resources"]["limits"].get("nvidia.com/gpu")
        for g in groups
        for c in g["template"]["spec"]["containers"]
    ]
    assert any(gpu_limits)
    images = {c["image"] for g in groups for c in g["template"]["spec"]["containers"]} | {head[0]["image"]}
    assert len(images) == 1  # head and workers run the same image


def test_dockerfile_matches_the_installed_ray_and_copies_existing_paths() -> None:
    lines = (CLUSTER_DIR / "Dockerfile").read_text().splitlines()
    base = next(line.split()[1] for line in lines if line.startswith("FROM "))
    assert base.startswith(f"rayproject/ray:{ray.__version__}-")
    for line in lines:
        if line.startswith("COPY "):
            sources = [part for part in line.split()[1:-1] if not part.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), f"Dockerfile copies missing {source}"
