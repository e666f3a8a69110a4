"""Connecting to Ray and checking the storage is shared (what the cluster can hold: :mod:`.capacity`).

Local (embedded) Ray is the default: ``ray.init()`` starts a private instance with the dashboard bound
to ``127.0.0.1``; binding it elsewhere needs an explicit ``--dashboard-host`` and logs a warning. Ray 2.60
turns token authentication on by default for such a local instance when ``RAY_AUTH_MODE`` is unset: it
reads ``$RAY_AUTH_TOKEN`` / ``$RAY_AUTH_TOKEN_PATH`` / ``~/.ray/auth_token`` and *creates* that file if none
exists. The dashboard then asks for the token (``ray get-auth-token`` prints it), and every process that
joins the instance (``--address auto``, ``ray.cluster_utils`` nodes, the launcher) must see the same token.
``RAY_AUTH_MODE=disabled`` turns it off (only sensible with loopback-only binding, e.g. in tests).

``--address auto`` (or ``host:port``) joins a running cluster instead. A multi-node search needs
``--storage`` on a filesystem every node mounts at the same path (NFS, Lustre, ...): Tune trial dirs,
Train checkpoints, the Optuna journal and the SIFT cache all live there. :func:`check_shared_storage`
writes a marker file and asks one task per node whether it sees it, and warns otherwise.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import ray

from .options import RunError

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class RayInfo:
    """What the driver learned when connecting."""

    address: str
    dashboard_url: str | None
    cpus: float
    gpus: float
    nodes: int
    started_here: bool
    auth: str


def connect(
    address: str | None = None,
    *,
    dashboard_host: str = "127.0.0.1",
    include_dashboard: bool = True,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
) -> RayInfo:
    """Start local Ray (``address=None``) or join a cluster; re-use an already initialised Ray.

    Raises:
        RunError: when joining fails (the message mentions the auth token when that is the likely cause).
    """
    started = False
    url: str | None = None
    if not ray.is_initialized():
        if address is None:
            if dashboard_host not in LOOPBACK:
                log.warning(
                    "Ray dashboard bound to %s: anyone who can reach this address can reach the dashboard "
                    "(and, without token auth, submit jobs). Prefer 127.0.0.1 with an SSH tunnel.",
                    dashboard_host,
                )
            context = ray.init(
                address="local",  # a private instance, never a cluster someone else started on this host
                include_dashboard=include_dashboard,
                dashboard_host=dashboard_host,
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                logging_level=logging.WARNING,
            )
            started = True
        else:
            try:
                context = ray.init(address=address, logging_level=logging.WARNING)
            except Exception as exc:
                raise RunError(
                    f"could not join the Ray cluster at {address!r}: {exc}. If the cluster uses token "
                    "authentication (the default since Ray 2.59), this process needs its token: "
                    "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token."
                ) from exc
        url = context.dashboard_url or None
    res = ray.cluster_resources()
    return RayInfo(
        address=ray.get_runtime_context().gcs_address,
        dashboard_url=f"http://{url}" if url and not url.startswith("http") else url,
        cpus=float(res.get("CPU", 0.0)),
        gpus=float(res.get("GPU", 0.0)),
        nodes=len([n for n in ray.nodes() if n.get("Alive")]),
        started_here=started,
        auth=os.environ.get("RAY_AUTH_MODE", "token (Ray default)"),
    )


def _sees(path: str) -> bool:
    return os.path.exists(path)


def check_shared_storage(marker: Path) -> list[str]:
    """Warn (and return the node ids) when a node of the cluster cannot see ``marker``'s directory.

    ``marker`` is a probe file path inside the run directory (:meth:`dvt_search.rundir.RunDir.storage_probe`);
    it is written here and removed afterwards. Object-store URIs (``s3://``, ``gs://``, ...) are shared by
    construction and not checked.
    """
    storage = Path(marker).parent
    if "://" in str(storage):
        return []
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return []
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = Path(marker)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("dvt-search shared storage check\n")
    try:
        probe = ray.remote(num_cpus=0)(_sees)
        refs = {
            n["NodeID"]: probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False)
            ).remote(str(marker))
            for n in nodes
        }
        blind = [node for node, ref in refs.items() if not ray.get(ref, timeout=120)]
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        log.warning(
            "storage %s is not visible from %d of %d Ray nodes (%s): trial checkpoints, the Optuna journal "
            "and the SIFT cache must be on a filesystem every node mounts at the same path (e.g. NFS)",
            storage,
            len(blind),
            len(nodes),
            ", ".join(b[:8] for b in blind),
        )
    return blind
