"""Helpers of the runtime tests: the test plug-in's name, search-space files, where Ray workers import from.

``SUPPORT_DIR`` (this folder) is on ``sys.path`` of the pytest process through the ``pythonpath`` option
in ``pyproject.toml``; Ray workers and driver subprocesses are separate processes, so the runtime
``conftest.py`` also puts it on ``PYTHONPATH`` for them (that is how ``--plugin dvt_test_plugins`` imports
there).
"""

from __future__ import annotations

from pathlib import Path

import yaml

#: This folder: holds ``dvt_test_plugins`` (the test families Ray workers load as a ``--plugin``).
SUPPORT_DIR = Path(__file__).resolve().parent
#: Module name of the test families, as given to ``--plugin`` / ``SearchOptions.plugins``.
PLUGIN = "dvt_test_plugins"


def write_spaces(directory: Path, spaces: dict[str, dict]) -> Path:
    """Write ``{family: {"params": ..., "fixed": ...}}`` as search-space files into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for family, doc in spaces.items():
        body = {"family": family, "params": doc.get("params", {}), "fixed": doc.get("fixed", {})}
        (directory / f"{family}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return directory


def report_assigned_resources(config: dict) -> None:
    """A Tune function reporting the GPU share Ray gave its trial (and its batch size)."""
    import ray
    import ray.tune

    gpu = ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)
    ray.tune.report({"gpu": gpu, "batch": config["params"]["batch_size"]})
