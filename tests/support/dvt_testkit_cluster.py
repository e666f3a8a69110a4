"""Helpers for the cluster-launcher tests: the cluster templates, and a real loopback "cluster".

``conftest.loopback_cluster`` runs the user's launch flow for real on this machine: an sshd of its own
on a free 127.0.0.1 port stands in for the head host, and ``cluster/local.yaml`` (its fields filled with
that port, a fresh key, free Ray ports and the running venv: :func:`fill_local_yaml`) is brought up with
the real ``ray up``.

The "node" behind that sshd gets what a separate machine would have: its own ``HOME`` (so ``~`` in the
YAML, ``~/.bashrc`` and ``~/.ray/auth_token`` are the node's, not yours) and ``RAY_TMPDIR``, both set by
the sshd's ``SetEnv``; and, where ``unshare`` allows it (root), its own PID namespace, so the ``ray stop``
that ``ray down`` runs on the head sees only the head's processes and never another Ray on this machine.
Every process started on the node carries the ``DVT_LOOPBACK_NODE`` marker in its environment, which is
how the tests find them, and how the finalizer kills stragglers when there is no PID namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER_DIR = REPO / "cluster"
MARKER_ENV = "DVT_LOOPBACK_NODE"
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.access("/usr/sbin/sshd", os.X_OK) else None)
#: Client-side tools the launcher needs besides sshd: ssh + ssh-keygen, rsync (file mounts, submit,
#: rsync-down) and nc (the proxy command that reaches the sshd's port).
CLIENT_TOOLS = ("ssh", "ssh-keygen", "rsync", "nc")


#: The head ports ``cluster/local.yaml`` starts with (GCS, dashboard, client server, dashboard agent).
LOCAL_PORTS = {
    "--port=": 6380,
    "--dashboard-port=": 8266,
    "--ray-client-server-port=": 9380,
    "--dashboard-agent-listen-port=": 52375,
}


def fill_local_yaml(
    out: Path,
    *,
    user: str,
    key: Path,
    ssh_port: int,
    venv: str,
    token_file: Path,
    ports: tuple[int, int, int, int],
    name: str = "dvt-local",
) -> Path:
    """Fill ``cluster/local.yaml``'s fields the way its header tells a user to, and write it to ``out``.

    The ``REPLACE_ME_*`` fields get ``user``/``key``/``venv``; the plain values worth checking (sshd
    port, head ports, the token file) are changed too, so the test's "node" keeps apart from any other
    Ray on this machine.
    """
    text = (CLUSTER_DIR / "local.yaml").read_text().replace("REPLACE_ME_VENV", venv)
    for flag, port in zip(LOCAL_PORTS, ports, strict=True):
        old = f"{flag}{LOCAL_PORTS[flag]}\n"
        assert text.count(old) == 1, f"cluster/local.yaml: expected one {old.strip()!r}"
        text = text.replace(old, f"{flag}{port}\n")
    config = yaml.safe_load(text)
    config["cluster_name"] = name
    config["auth"].update(
        ssh_user=user, ssh_private_key=str(key), ssh_proxy_command=f"nc 127.0.0.1 {ssh_port}"
    )
    config["file_mounts"] = {"~/.ray/auth_token": str(token_file)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct TCP ports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def marked_pids(marker: str) -> dict[int, str]:
    """Return ``{pid: command name}`` of live processes whose environment carries ``marker``."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found[int(entry.name)] = (entry / "comm").read_text().strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL if the test process dies (Linux ``PR_SET_PDEATHSIG``)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def _pid_namespace_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "true"]
    return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0


@dataclass
class LoopbackNode:
    """An sshd on a free loopback port whose sessions get their own HOME, RAY_TMPDIR and marker."""

    root: Path
    port: int = 0
    key: Path = field(init=False)
    home: Path = field(init=False)
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    isolated: bool = False
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.key = self.root / "client_key"
        self.home = self.root / "home"

    def start(self) -> None:
        """Generate keys and config, start sshd and wait until it accepts connections."""
        self.home.mkdir()
        (self.root / "node_tmp").mkdir()
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
        subprocess.run([*keygen, "-f", str(self.root / "host_key")], check=True)
        subprocess.run([*keygen, "-f", str(self.key)], check=True)
        shutil.copy(f"{self.key}.pub", self.root / "authorized_keys")
        self.port = free_ports(1)[0]
        config = self.root / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.root / 'host_key'}\n"
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            f"PidFile {self.root / 'sshd.pid'}\n"
            f"SetEnv HOME={self.home} RAY_TMPDIR={self.root / 'node_tmp'} {MARKER_ENV}={self.marker}\n"
        )
        if os.geteuid() == 0:  # privilege separation directory, normally made by the ssh service
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        sshd = [SSHD, "-D", "-e", "-f", str(config)]
        self.isolated = _pid_namespace_available()
        if self.isolated:
            sshd = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", *sshd]
        with (self.root / "sshd.log").open("wb") as log:
            self.proc = subprocess.Popen(
                sshd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"sshd did not listen on 127.0.0.1:{self.port} within 20 s")

    def stop(self) -> None:
        """Kill sshd and everything started through it (the whole PID namespace when isolated)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # unshare --kill-child: the namespace's init dies, and with it every member
            self.proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while (left := marked_pids(self.marker)) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)


@dataclass
class LoopbackCluster:
    """A filled-in ``cluster/local.yaml`` brought up with ``ray up`` on a :class:`LoopbackNode`."""

    node: LoopbackNode
    name: str
    yaml: Path
    token: str
    dashboard_port: int
    env: dict[str, str]
    ray_bin: str

    def ray(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the venv's ``ray`` CLI with this cluster's client environment."""
        done = subprocess.run(
            [self.ray_bin, *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"`ray {' '.join(args)}` exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}"
            )
        return done


def missing_tools() -> list[str]:
    """Names of the programs the launch flow needs (sshd + :data:`CLIENT_TOOLS`) that are not installed."""
    missing = [tool for tool in CLIENT_TOOLS if shutil.which(tool) is None]
    return (["sshd"] if SSHD is None else []) + missing
