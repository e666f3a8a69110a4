"""A trial process ended by SIGTERM while its main thread runs a finalizer prints no traceback, and ends.

Ray's worker SIGTERM handler raises ``SystemExit``; inside a finalizer Python cannot propagate it and prints
"Exception ignored in: <...> Traceback ... SystemExit: 1" (forwarded to the driver's terminal: seen after
the SIFT family's trials in ``make demo``), and the exit is dropped. :mod:`dvt_search.runtime.sigterm`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

BLOCK = "Exception ignored in"


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _start(tmp_path: Path, **options):
    import ray
    from dvt_testkit_sigterm import TrialProcess

    actor = ray.remote(num_cpus=1)(TrialProcess).options(**options).remote()
    info = ray.get(actor.start.remote(str(tmp_path / "not-mounted")), timeout=60)
    marker = tmp_path / "in_finalizer"
    return actor, info, marker


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_placement_group_removed_during_a_finalizer_prints_no_traceback(ray_2_cpus, tmp_path) -> None:
    """As Tune ends a trial's process: its placement group is removed and the raylet sends SIGTERM."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = placement_group([{"CPU": 1}])
    ray.get(group.ready(), timeout=60)
    actor, info, marker = _start(tmp_path, scheduling_strategy=PlacementGroupSchedulingStrategy(group))
    actor.finalize_slowly.remote(str(marker), 60.0)
    _wait_for(marker.exists, 30, "the finalizer to start")
    remove_placement_group(group)
    _wait_for(lambda: _gone(int(info["pid"])), 30, "the trial process to end")
    stderr = Path(str(info["stderr"])).read_text()
    assert BLOCK not in stderr and "SystemExit" not in stderr, stderr


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_sigterm_during_a_finalizer_still_ends_the_process(ray_2_cpus, tmp_path) -> None:
    """A plain SIGTERM (no SIGKILL follows): swallowed by the finalizer, the process would live on."""
    actor, info, marker = _start(tmp_path)
    pid = int(info["pid"])
    actor.finalize_slowly.remote(str(marker), 60.0)
    _wait_for(marker.exists, 30, "the finalizer to start")
    os.kill(pid, signal.SIGTERM)
    _wait_for(lambda: _gone(pid), 20, "the trial process to end on SIGTERM")
    stderr = Path(str(info["stderr"])).read_text()
    assert BLOCK not in stderr and "SystemExit" not in stderr, stderr


SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time, weakref
    from dvt_search.runtime import sigterm

    def handler(signum, frame):  # what Ray's worker installs
        raise SystemExit(1)

    signal.signal(signal.SIGTERM, handler)
    sigterm.install()
    sigterm.install()  # a re-used process installs once per trial

    class Held:
        pass

    def fail():
        raise ValueError("a real error in a finalizer")

    held = Held()
    weakref.finalize(held, fail)
    del held
    held = Held()
    weakref.finalize(held, lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(30)))
    del held
    for _ in range(3000):  # the SIGTERM is delivered again after the finalizer: SystemExit(1) here
        time.sleep(0.01)
    print("still running")
    """
)


def test_other_finalizer_errors_still_print_and_the_sigterm_exit_is_kept() -> None:
    """Without Ray: a finalizer's real error is printed as always; the SIGTERM in a finalizer exits."""
    root = str(Path(__file__).resolve().parents[2])  # this checkout's dvt_search
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, env=env)
    assert time.monotonic() - started < 25, "the SIGTERM was lost: the finalizer slept on"
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "still running" not in done.stdout
    assert "ValueError: a real error in a finalizer" in done.stderr, done.stderr
    assert done.stderr.count(BLOCK) == 1 and "SystemExit" not in done.stderr, done.stderr
