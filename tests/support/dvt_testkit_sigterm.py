"""A stand-in for a trial's process whose main thread is inside a finalizer when SIGTERM arrives.

Used by ``tests/runtime/test_sigterm.py`` as a Ray actor (this folder is on the workers' ``PYTHONPATH``,
see ``tests/runtime/conftest.py``). Tune ends a trial's process by removing its placement group, and the
raylet sends the process SIGTERM; the main thread at that moment often runs finalizers (Tune's ``stop``
drops the finished trial's session and thread). Here one finalizer runs long enough on the main thread
that the SIGTERM surely lands in it.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from pathlib import Path


class _Held:
    """An object with a finalizer."""


def _mark_and_sleep(marker: str, seconds: float) -> None:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)


class TrialProcess:
    """Set up like a trial's process, then run a slow finalizer on the main thread (actor methods run there)."""

    def start(self, missing_run_dir: str) -> dict[str, object]:
        """Run a trial the shortest real way: :func:`~dvt_search.runtime.trainable.run_trial` on a run
        directory this process cannot see ends at its storage check (outside Tune its report is a no-op); in
        a thread of its own, as Tune runs a trial's function.
        Returns the pid and the file the process's stderr goes to (Ray's ``worker-*.err``)."""
        from dvt_search.runtime.trainable import run_trial

        config = {"run": {"run_dir": missing_run_dir, "marker": "not-there", "metric": "val_auc"}}
        trial = threading.Thread(target=run_trial, args=(config,))  # as Tune's function runner thread
        trial.start()
        trial.join()
        return {"pid": os.getpid(), "stderr": os.readlink("/proc/self/fd/2")}

    def finalize_slowly(self, marker: str, seconds: float) -> str:
        """Drop an object whose finalizer writes ``marker`` and then sleeps ``seconds``."""
        held = _Held()
        weakref.finalize(held, _mark_and_sleep, marker, seconds)
        del held  # the finalizer runs here, in the main thread
        return "finalizer done"
