"""Fixture for the launch-flow tests: ``cluster/local.yaml`` brought up for real on a loopback sshd.

The machinery (and why the "node" gets its own HOME, RAY_TMPDIR and PID namespace) is in
``dvt_testkit_cluster`` (in ``tests/support``).
"""

from __future__ import annotations

import getpass
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dvt_testkit_cluster import (
    LoopbackCluster,
    LoopbackNode,
    fill_local_yaml,
    free_ports,
    missing_tools,
)


@pytest.fixture(scope="module")
def loopback_cluster() -> Iterator[LoopbackCluster]:
    """Bring ``cluster/local.yaml`` up on a private loopback sshd; tear everything down afterwards."""
    missing = missing_tools()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (Debian: `make sysdeps`, as root)")
    # Short root: Ray's Unix sockets live under RAY_TMPDIR and their paths must stay < 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="dvtc", dir="/tmp"))
    node = LoopbackNode(root)
    name = f"dvt-test-{node.marker[:8]}"
    local_tmp = root / "client_tmp"
    local_tmp.mkdir()
    try:
        node.start()
        from ray._private.authentication.authentication_token_generator import (
            generate_new_authentication_token,
        )

        token = generate_new_authentication_token()
        token_file = root / "auth_token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        gcs, dashboard, client, agent = free_ports(4)
        filled = fill_local_yaml(
            root / "local.yaml",
            user=getpass.getuser(),
            key=node.key,
            ssh_port=node.port,
            venv=sys.prefix,
            token_file=token_file,
            ports=(gcs, dashboard, client, agent),
            name=name,
        )
        # The client side keeps its launcher state (cluster state file, config cache) in the tmp dir too.
        env = dict(os.environ, RAY_TMPDIR=str(local_tmp), TMPDIR=str(local_tmp), RAY_USAGE_STATS_ENABLED="0")
        env.pop("RAY_ADDRESS", None)
        cluster = LoopbackCluster(
            node=node,
            name=name,
            yaml=filled,
            token=token,
            dashboard_port=dashboard,
            env=env,
            ray_bin=str(Path(sys.executable).parent / "ray"),
        )
        cluster.ray("up", "-y", str(filled), timeout=600)
        yield cluster
    finally:
        node.stop()
        # SSH connection-sharing sockets the launcher keeps per cluster name (plain /tmp, not TMPDIR).
        user_hash = hashlib.sha256(getpass.getuser().encode()).hexdigest()[:10]
        cluster_hash = hashlib.sha256(name.encode()).hexdigest()[:10]
        shutil.rmtree(Path("/tmp") / f"ray_ssh_{user_hash}" / cluster_hash, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
