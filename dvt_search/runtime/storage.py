"""Shared storage, enforced per trial: a trial on a node that does not see the run directory fails at once.

The driver writes a random token into the run directory's storage marker
(:meth:`dvt_search.rundir.RunDir.ensure_storage_marker`, once per run, kept on ``--resume``) and sends the
token with every trial's Tune config (``config["run"]["marker"]``). Before it reads anything else of the
run, each trial process (the Tune function, and each Ray Train worker) checks that it reads the same token
at the same path (:func:`check_marker`). A node whose ``--storage`` is node-local (no marker), a stale copy
of another run (another token) or an unreadable mount fails the trial with :class:`StorageError`, whose
message names the node (host name and Ray node id) and the marker's path.

That failure is an error the user must fix, not a flaky trial: retrying on the same node cannot help. So
the Tune function does not raise it (Tune's ``FailureConfig`` would retry it ``--max-failures`` times, and
its error file would hold a traceback): it reports one result carrying the message under
:data:`STORAGE_ERROR_KEY` and returns. The driver's records then say ``failed`` with the message
(:class:`~.callbacks.RecordsCallback`), the progress line counts it as failed and the Optuna trial is told
FAIL (no value was reported). A Ray Train worker that fails the check raises; the trial's Tune function
recognises the message in Train's error and reports it the same way.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Mapping
from typing import Any

from dvt_search.rundir import RunDir

#: Result key of a trial that failed the storage check (its value: the message).
STORAGE_ERROR_KEY = "storage_error"
#: Start of every :class:`StorageError` message (how a Ray Train failure is recognised).
TAG = "shared storage not visible"


class StorageError(RuntimeError):
    """This node does not see the run directory the driver wrote."""


def node_name() -> str:
    """``host (Ray node abcd1234ef56)``, or the host alone outside Ray."""
    host = socket.gethostname()
    try:
        import ray

        if ray.is_initialized():
            return f"{host} (Ray node {ray.get_runtime_context().get_node_id()[:12]})"
    except Exception:  # noqa: BLE001 - the host name alone still names the node
        pass
    return host


def check_marker(ref: Mapping[str, Any]) -> None:
    """Check this process reads the driver's storage-marker token (``ref``: a trial's ``config["run"]``).

    Raises:
        StorageError: the marker is missing, unreadable or holds another token; the message names this
            node and the marker's path.
    """
    expected = ref.get("marker")
    if not expected:  # a trial config written before markers existed: nothing to compare
        return
    path = RunDir(ref["run_dir"]).storage_marker
    try:
        found = RunDir(ref["run_dir"]).read_storage_marker()
    except OSError as exc:
        reason = f"cannot read it ({exc.strerror or exc})"
    else:
        if found is None:
            reason = "no such file"
        elif found != expected:
            reason = "it holds another run's token (a stale or node-local copy)"
        else:
            return
    raise StorageError(
        f"{TAG}: node {node_name()} cannot see the run directory's storage marker {path}: {reason}. "
        "--storage must be a filesystem every Ray node mounts at the same path (NFS, EFS, Lustre, ...); "
        "fix the mount on this node and resume the run"
    )


def failure_result(message: str, metric: str) -> dict[str, Any]:
    """The one result a trial reports when it failed the check (the metric NaN: Tune requires it)."""
    return {STORAGE_ERROR_KEY: message, metric: math.nan, "epoch": 0}


def storage_message(exc: BaseException) -> str | None:
    """The storage-check message inside ``exc`` (e.g. a Ray Train failure of a worker), if any."""
    text = str(exc)
    at = text.find(TAG)
    if at < 0:
        return None
    return text[at:].split("\n", 1)[0].strip()
