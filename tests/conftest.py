"""Suite-wide settings and shared fixtures.

Settings: keep CPU thread counts sane on small CI machines, one Ray auth mode for every process, skip GPU
tests without CUDA. Fixtures: ``phantom_data`` (every phantom dataset of the suite, generated once per
argument set), and the run directories of the selection/report/deploy tests (``run_factory``,
``selected_run``, ``exported``). Their code lives in ``tests/support`` (``dvt_testkit_*`` modules,
importable through the ``pythonpath`` option in ``pyproject.toml``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from dvt_testkit_phantom import PhantomCache

# The support modules (numpy, pandas, dvt_search) are imported inside the fixtures, after the settings
# below: native libraries read the thread counts when they load.

# Two cores here: more intra-op threads than cores only adds contention between test processes.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Ray 2.60 caches its auth mode in the process when ray is first imported. Every test process must see the
# same mode from the start (token auth, as in production), with a per-session token kept in the
# environment so nothing is written to ~/.ray and a token file left there by a demo run is never used.
os.environ.setdefault("RAY_AUTH_MODE", "token")
if os.environ["RAY_AUTH_MODE"] == "token":
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Shut down a Ray instance a test module left running before the interpreter exits.

    Module-scoped Ray fixtures share one instance across modules and leave it up at the end; tearing it
    down here, while pytest still runs, keeps Ray's worker threads out of the interpreter's own shutdown.
    """
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def phantom_data(tmp_path_factory: pytest.TempPathFactory) -> PhantomCache:
    """``phantom_data(patients=..., seed=..., size=..., ...)`` -> a shared :class:`PhantomData`.

    Takes :func:`dvt_search.data.phantom.generate`'s content arguments (its defaults for those left
    out); each distinct argument set is generated once per session. Never write into the dataset.
    """
    from dvt_testkit_phantom import PhantomCache

    return PhantomCache(tmp_path_factory.mktemp)


@pytest.fixture()
def run_factory():
    """:func:`make_run` and :func:`trial` for building synthetic run directories."""
    from dvt_testkit_runs import make_run, trial

    return make_run, trial


@pytest.fixture(scope="session")
def selected_run(phantom_data: PhantomCache, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A phantom dataset, a run directory with really trained tiny models, and its selection.

    Keys: ``root``, ``run`` (RunDir), ``manifest``, ``selection``, ``cache``; see
    :func:`dvt_testkit_runs.build_selected_run`.
    """
    from dvt_testkit_runs import SELECTED_RUN_PHANTOM, build_selected_run

    return build_selected_run(tmp_path_factory.mktemp("selected"), phantom_data(**SELECTED_RUN_PHANTOM))


@pytest.fixture(scope="session")
def exported(selected_run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The vgg16 and sift_bow_svm winners of :func:`selected_run` exported."""
    from dvt_search.deploy.export import export_run

    out = tmp_path_factory.mktemp("export")
    dirs = export_run(selected_run["run"].path, out, families=["vgg16", "sift_bow_svm"])
    assert sorted(d.name for d in dirs) == ["sift_bow_svm", "vgg16"]
    return out


# ------------------------------------------------------------------ de-identified DICOM from pydicom's files
@pytest.fixture()
def bundled_ct_series():  # noqa: ANN201
    """:func:`dvt_testkit_dicom.write_bundled_ct_series` for tests in any room."""
    from dvt_testkit_dicom import write_bundled_ct_series

    return write_bundled_ct_series
