"""What the search's processes print: the project's own lines, not Ray Tune's or Optuna's.

Driver side, :func:`quiet_libraries` is entered around each Tune experiment (and only there, so nothing
changes at import time and the settings are restored afterwards):

* Ray Tune's default ("new") output engine prints a "Configuration for experiment" box, "View detailed
  results here" and a TensorBoard hint at the start of every ``Tuner.fit`` even with
  ``RunConfig(verbose=0)``. ``RAY_AIR_NEW_OUTPUT=0`` (read by ``tune.run`` at call time) selects Tune's
  legacy reporter, which at ``verbose=0`` prints nothing; Tune's result files (``result.json``,
  ``progress.csv``, TensorBoard events) are still written in ``tune/<family>/``.
* Optuna's INFO lines ("A new study created in Journal ...", "Trial N finished ...") are held back by
  raising the ``optuna`` logger to WARNING for the duration; Optuna's ``ExperimentalWarning`` (TPE's
  ``group=True`` for conditional spaces) is filtered inside the same scope.

The driver's progress lines (:class:`~.callbacks.ProgressCallback`) stay; ``dvt-search status RUN_DIR``
prints the per-trial table on demand.

Trial side, :func:`trial_logger` gives the trial process a logger that writes one line per finished
epoch to its stderr: Ray forwards worker output to the driver, so the lines appear in the driver's output
(prefixed with the trial's process) and in the Jobs page of the dashboard for ``ray job submit``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

#: Tune's switch between its output engines ("0": the legacy reporter, silent at ``verbose=0``).
TUNE_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"
#: The logger of the per-epoch lines in trial processes.
TRIAL_LOGGER = "dvt_search.trial"


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@contextlib.contextmanager
def _logger_level(name: str, level: int) -> Iterator[None]:
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logger.setLevel(before)


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Hold back Tune's experiment banners and Optuna's INFO lines / ExperimentalWarning (this scope only)."""
    from optuna.exceptions import ExperimentalWarning

    with (
        _env(TUNE_OUTPUT_ENV, "0"),
        _logger_level("optuna", logging.WARNING),
        # Tune's INFO lines ("Wrote the latest version of all result files ..."): a Ray actor (families
        # searched at once, .concurrent) logs INFO where the driver's default is WARNING
        _logger_level("ray.tune", logging.WARNING),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", ExperimentalWarning)
        yield


def trial_logger() -> logging.Logger:
    """The trial process's epoch logger (INFO, one handler on stderr, not propagated: no double lines)."""
    logger = logging.getLogger(TRIAL_LOGGER)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def epoch_line(family: str, trial_id: str, epoch: int, budget: int, metrics: Mapping[str, Any]) -> str:
    """``[vgg16] trial a1b2c3d4 epoch 3/10: val_auc 0.7132 train_loss 0.4210``."""
    shown = " ".join(
        f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k != "epoch" and isinstance(v, (int, float))
    )
    return f"[{family}] trial {trial_id} epoch {epoch}/{budget}: {shown}".rstrip()
