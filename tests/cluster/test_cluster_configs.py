"""The cluster YAMLs are valid as committed: Ray's own cluster-config schema, no render step; entry script, KubeRay job."""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from dvt_testkit_cluster import CLUSTER_DIR, REPO, fill_local_yaml
from ray.autoscaler._private.util import prepare_config, validate_config

#: Configs for Ray's cluster launcher (``ray up``); the KubeRay job is a Kubernetes manifest.
LAUNCHER_CONFIGS = ("cluster.yaml", "local.yaml", "onprem.yaml")
#: A field the user fills: a literal ``REPLACE_ME_*`` value (valid YAML, valid for Ray's schema as is).
FIELD = re.compile(r"REPLACE_ME_[A-Z0-9_]+")
ALL_YAML = sorted(CLUSTER_DIR.glob("*.yaml"))


def committed(name: str) -> dict[str, Any]:
    """The config as committed, loaded the way ``ray up`` loads it."""
    return yaml.safe_load((CLUSTER_DIR / name).read_text())


def commands(config: dict[str, Any]) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands")
    keys += ("head_start_ray_commands", "worker_start_ray_commands")
    return [cmd for key in keys for cmd in config.get(key, [])]


def test_every_launcher_config_is_covered() -> None:
    names = sorted(p.name for p in ALL_YAML if not p.name.startswith("kuberay-"))
    assert names == sorted(LAUNCHER_CONFIGS)


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: p.name)
def test_every_yaml_is_valid_yaml_with_no_render_step(path: Path) -> None:
    text = path.read_text()
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)
    assert "${DVT_" not in text  # no template syntax left for a render step to fill


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_committed_config_validates_against_ray_schema_unchanged(name: str) -> None:
    config = committed(name)
    prepared = prepare_config(copy.deepcopy(config))  # what `ray up` does before validating
    validate_config(prepared)


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_schema_check_rejects_a_broken_variant(name: str) -> None:
    config = prepare_config(committed(name))
    config["auth"]["ssh_port"] = 2222  # not a Ray setting: the schema forbids unknown auth keys
    with pytest.raises(jsonschema.ValidationError):
        validate_config(config)


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_dashboard_loopback_and_token_auth(name: str) -> None:
    config = committed(name)
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    for cmd in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in cmd or '/ray" start' in cmd:
            assert "export RAY_AUTH_MODE=token;" in cmd, cmd
    assert "~/.ray/auth_token" in config["file_mounts"]


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_every_command_is_valid_bash(name: str) -> None:
    for cmd in commands(committed(name)):
        check = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
        assert check.returncode == 0, f"{name}: {cmd!r}: {check.stderr}"


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: p.name)
def test_every_field_to_fill_is_documented_in_the_header(path: Path) -> None:
    text = path.read_text()
    first = re.search(r"^[a-zA-Z]", text, re.MULTILINE)  # the first line that is not a comment
    header, body = text[: first.start()], text[first.start() :]
    fields = sorted(set(FIELD.findall(body)))
    assert fields or path.name == "kuberay-node-types.yaml", f"{path.name}: nothing marked to fill"
    # onprem's worker list is documented on one line (REPLACE_ME_WORKER_IP_1/2).
    undocumented = [f for f in fields if f not in header and f.rstrip("0123456789") not in header]
    assert not undocumented, f"{path.name}: document {undocumented} in the header comment"


def test_cloud_config_autoscales_gpu_workers_from_zero() -> None:
    config = committed("cluster.yaml")
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1
    assert gpu["resources"]["GPU"] >= 1
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    assert config["file_mounts"]["~/dvt-search"] == "."
    images = {t["node_config"]["ImageId"] for t in config["available_node_types"].values()}
    assert images == {"REPLACE_ME_AMI_ID"}  # one field to fill: the workers alias the head's image


def test_onprem_config_lists_its_hosts() -> None:
    provider = committed("onprem.yaml")["provider"]
    assert provider["type"] == "local" and provider["head_ip"] == "REPLACE_ME_HEAD_IP"
    assert provider["worker_ips"] == ["REPLACE_ME_WORKER_IP_1", "REPLACE_ME_WORKER_IP_2"]


def test_filled_local_config_has_nothing_left_to_fill(tmp_path: Path) -> None:
    # What the launch-flow fixture does to cluster/local.yaml (that test needs sshd; this one does not).
    out = fill_local_yaml(
        tmp_path / "local.yaml",
        user="root",
        key=tmp_path / "key",
        ssh_port=2222,
        venv="/opt/dvt/.venv",
        token_file=tmp_path / "token",
        ports=(16380, 18266, 9381, 52376),
    )
    text = out.read_text()
    assert "REPLACE_ME" not in text
    config = yaml.safe_load(text)
    validate_config(prepare_config(copy.deepcopy(config)))
    assert config["auth"] == {"ssh_user": "root", "ssh_private_key": str(tmp_path / "key"),
                              "ssh_proxy_command": "nc 127.0.0.1 2222"}  # fmt: skip
    head = " ".join(config["head_start_ray_commands"])
    for flag in ("--port=16380", "--dashboard-port=18266", "--ray-client-server-port=9381"):
        assert flag in head
    assert "--dashboard-agent-listen-port=52376" in head
    assert '"/opt/dvt/.venv/bin/ray" start' in head
    assert config["file_mounts"] == {"~/.ray/auth_token": str(tmp_path / "token")}


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


def test_kuberay_node_types_match_the_rayjob() -> None:
    from dvt_search.runtime.capacity import from_config_file

    job = yaml.safe_load((CLUSTER_DIR / "kuberay-rayjob.yaml").read_text())
    cluster = job["spec"]["rayClusterSpec"]
    assert (
        "--autoscaling-config /home/ray/dvt-search/cluster/kuberay-node-types.yaml"
        in job["spec"]["entrypoint"]
    )
    capacity = from_config_file(CLUSTER_DIR / "kuberay-node-types.yaml")
    table = {t.name: t for t in capacity.node_types}
    assert table["head"].resources == {"CPU": float(cluster["headGroupSpec"]["rayStartParams"]["num-cpus"])}
    for group in cluster["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        node = table[group["groupName"]]
        assert node.max_count == group["maxReplicas"]
        assert node.resources == {"CPU": float(limits["cpu"]), "GPU": float(limits.get("nvidia.com/gpu", 0))}


def test_dockerfile_matches_the_installed_ray_and_copies_existing_paths() -> None:
    lines = (CLUSTER_DIR / "Dockerfile").read_text().splitlines()
    base = next(line.split()[1] for line in lines if line.startswith("FROM "))
    assert base.startswith(f"rayproject/ray:{ray.__version__}-")
    for line in lines:
        if line.startswith("COPY "):
            sources = [part for part in line.split()[1:-1] if not part.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), f"Dockerfile copies missing {source}"


def test_cloud_config_is_least_privilege_and_encrypted() -> None:
    config = committed("cluster.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]["node_config"]
    workers = [t["node_config"] for name, t in types.items() if name != config["head_node_type"]]
    # Own profiles on every node: without one on the head `ray up` creates Ray's default role with
    # AmazonEC2FullAccess + AmazonS3FullAccess.
    assert head["IamInstanceProfile"] == {"Arn": "REPLACE_ME_HEAD_PROFILE_ARN"}
    assert all(w["IamInstanceProfile"] == {"Arn": "REPLACE_ME_WORKER_PROFILE_ARN"} for w in workers)
    # Own security group (Ray's default one opens SSH to 0.0.0.0/0), every EBS volume encrypted.
    nodes = [head, *workers]
    assert all(n["SecurityGroupIds"] == ["REPLACE_ME_SECURITY_GROUP_ID"] for n in nodes)
    volumes = [m["Ebs"] for n in nodes for m in n["BlockDeviceMappings"]]
    assert volumes and all(v.get("Encrypted") is True for v in volumes)


def _actions(policy: dict[str, Any]) -> list[str]:
    out = []
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        out += [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
    return out


def test_iam_policies_grant_no_broad_access() -> None:
    import json

    iam = CLUSTER_DIR / "iam"
    head = json.loads((iam / "head-policy.json").read_text())
    worker = json.loads((iam / "worker-policy.json").read_text())
    trust = json.loads((iam / "ec2-trust.json").read_text())
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    head_actions, worker_actions = _actions(head), _actions(worker)
    assert not [
        a for a in head_actions + worker_actions if a == "*" or a.endswith(":*") or a.startswith("s3:")
    ]
    assert not [a for a in worker_actions if a.startswith(("ec2:", "iam:"))]
    # the head may terminate only this cluster's nodes and pass only the workers' role
    terminate = next(s for s in head["Statement"] if "ec2:TerminateInstances" in s["Action"])
    tag = terminate["Condition"]["StringEquals"]["ec2:ResourceTag/ray-cluster-name"]
    assert tag == committed("cluster.yaml")["cluster_name"]
    (passrole,) = [s for s in head["Statement"] if s["Action"] == "iam:PassRole"]
    assert passrole["Resource"].endswith(":role/dvt-search-worker")
    # every field to fill in them is explained in cluster/README.md
    readme = (CLUSTER_DIR / "README.md").read_text()
    fields = set(
        FIELD.findall((iam / "head-policy.json").read_text() + (iam / "worker-policy.json").read_text())
    )
    assert fields and all(f in readme for f in fields)
