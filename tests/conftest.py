"""Suite-wide settings: keep CPU thread counts sane on small CI machines and skip GPU tests without CUDA."""

from __future__ import annotations

import os
import secrets

import pytest

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


# ------------------------------------------------------------------ de-identified DICOM from pydicom's files
@pytest.fixture()
def bundled_ct_series():  # noqa: ANN201
    """:func:`dicom_testdata.write_bundled_ct_series` for tests in any room."""
    from dicom_testdata import write_bundled_ct_series

    return write_bundled_ct_series
