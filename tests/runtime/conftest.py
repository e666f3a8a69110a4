"""Fixtures of the runtime tests: tiny phantom data and real local Ray instances.

Token authentication stays on (Ray 2.60's default) with the per-session token ``tests/conftest.py`` puts
in ``RAY_AUTH_TOKEN``; every Ray process and driver subprocess inherits it. ``PYTHONPATH`` gets
``tests/support`` so Ray workers and driver subprocesses can import the test plug-in families
(``dvt_test_plugins``); this process has it on ``sys.path`` already (``pythonpath`` in ``pyproject.toml``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dvt_testkit_runtime import SUPPORT_DIR

HERE = Path(__file__).resolve().parent

_SAVED_ENV: dict[str, str | None] = {}


@pytest.fixture(scope="session", autouse=True)
def _runtime_env() -> Iterator[None]:
    """Ray settings for the tests of this directory (restored when its last test is done).

    Ray's auth mode and per-session token come from ``tests/conftest.py`` (set before Ray is imported).
    """
    keys = ("RAY_ADDRESS", "RAY_DEDUP_LOGS", "PYTHONPATH")
    _SAVED_ENV.update({k: os.environ.get(k) for k in keys})
    os.environ.pop("RAY_ADDRESS", None)
    os.environ["RAY_DEDUP_LOGS"] = "0"
    paths = [str(SUPPORT_DIR), *filter(None, (_SAVED_ENV["PYTHONPATH"] or "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    yield
    _restore_env()


def _restore_env() -> None:
    for key, value in _SAVED_ENV.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _SAVED_ENV.clear()


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the last test of this directory: stop the shared Ray instance and restore the environment."""
    if nextitem is None or HERE not in Path(nextitem.path).parents:
        if "ray" in sys.modules:
            sys.modules["ray"].shutdown()
        _restore_env()


@pytest.fixture(scope="session")
def phantom(phantom_data) -> Path:
    """A tiny phantom dataset (64^2 volumes, few slices); returns the manifest path."""
    return phantom_data(patients=6, seed=0, size=64, slices_per_scan=6, preset="easy").manifest


@pytest.fixture(scope="module")
def ray_2_cpus(_runtime_env: None) -> Iterator[None]:
    """A local Ray instance with 2 CPUs for the test module.

    Consecutive modules share one instance (starting Ray costs ~10 s here); a module that needs
    another topology (``ray.cluster_utils.Cluster``) shuts it down, and the next user starts a new one.
    """
    import ray

    if ray.is_initialized() and ray.cluster_resources().get("CPU") != 2.0:
        ray.shutdown()
    if not ray.is_initialized():
        # address="local": a private instance, never a cluster another process started on this host
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
