"""Synthetic prediction tables for the statistics tests: patients, a DVT label per slice, family scores."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd


def simulated_predictions(
    seed: int,
    spec: dict[str, tuple[float, float]],
    n_pat: int,
    slices: int,
    positive: Callable[[int], bool],
) -> pd.DataFrame:
    """One scan per patient; every other patient DVT-positive on the slices where ``positive(z)``.

    Each family of ``spec`` scores ``sigmoid(shift * label + patient effect + noise)`` with its
    ``(shift, patient sd)``, so slices of one patient are correlated when the sd is above 0.
    """
    rng = np.random.default_rng(seed)
    rows = [
        (f"P{p:02d}", f"P{p:02d}-S0", z, int(p % 2 == 0 and positive(z)))
        for p in range(n_pat)
        for z in range(slices)
    ]
    base = pd.DataFrame(rows, columns=["patient_id", "scan_id", "slice_index", "label"])
    base["row"] = np.arange(len(base))
    pidx = base["patient_id"].str[1:].astype(int).to_numpy()
    out = []
    for fam, (shift, sd_patient) in spec.items():
        f = base.copy()
        f["family"], f["trial_id"] = fam, f"{fam}-t"
        u = rng.normal(0, sd_patient, n_pat)[pidx]
        f["score"] = 1 / (1 + np.exp(-(shift * f["label"] + u + rng.normal(0, 1, len(f)))))
        out.append(f)
    return pd.concat(out, ignore_index=True)
