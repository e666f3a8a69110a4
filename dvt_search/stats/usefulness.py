"""Calibration beyond the Brier score, and clinical usefulness: recalibration and the decision curve.

* :func:`brier_summary` — the Brier score beside its no-skill reference ``prevalence * (1 - prevalence)``
  (the Brier score of always predicting the observed prevalence) and the scaled Brier score
  ``1 - Brier / reference`` (0 = no better than the prevalence, 1 = perfect, negative = worse).
* :func:`recalibration` — logistic recalibration on the logit of the scores (Cox 1958): the calibration
  slope ``b`` of ``logit P(y=1) = a + b * logit(score)`` (1 = ideal; < 1 = overconfident scores, too
  extreme; > 1 = underconfident) and the calibration intercept ``a'`` of ``logit P(y=1) = a' +
  logit(score)`` with the slope fixed at 1 (calibration-in-the-large: 0 = ideal, > 0 = risks
  underestimated), with percentile intervals of the patient bootstrap. Both are maximum-likelihood fits
  (Newton-Raphson), vectorised over the resamples as weighted fits (a row's weight is its patient's draw
  count). Where the scores separate the classes perfectly the slope is unbounded: NaN, counted as an
  undefined resample (or noted when it happens on the full data).
* :func:`decision_curve` — net benefit ``TP/n - FP/n * pt / (1 - pt)`` of calling a unit positive when its
  score is ``>= pt`` against the threshold probability ``pt`` (Vickers & Elkin 2006), with the treat-all
  (``prevalence - (1 - prevalence) * pt / (1 - pt)``) and treat-none (0) references.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from dvt_search.stats.bootstrap import CI, PatientBootstrap
from dvt_search.stats.measures import _as_arrays

#: Scores are clipped into ``[EPS, 1 - EPS]`` before their logit is taken.
EPS = 1e-6
#: Slopes beyond this magnitude (or fits that do not converge) are treated as separation: not estimable.
_MAX_SLOPE = 50.0
_ITERATIONS = 60
_TOL = 1e-9
#: Threshold probabilities of the decision curve.
DECISION_THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(1, 100))


def logit(s: Sequence[float] | np.ndarray) -> np.ndarray:
    """``log(s / (1 - s))`` of scores clipped into ``[EPS, 1 - EPS]``."""
    p = np.clip(np.asarray(s, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p / (1.0 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def brier_summary(y: Sequence[int] | np.ndarray, s: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Brier score, its no-skill reference ``prevalence * (1 - prevalence)`` and the scaled Brier score."""
    y, s = _as_arrays(y, s)
    brier = float(np.mean((s - y) ** 2)) if y.size else float("nan")
    prev = float(y.mean()) if y.size else float("nan")
    ref = prev * (1.0 - prev)
    scaled = 1.0 - brier / ref if ref > 0 else float("nan")
    return {"brier": brier, "prevalence": prev, "brier_reference": ref, "scaled_brier": scaled}


def _fit(w: np.ndarray, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted ML fits per row of ``w`` [R, n]: slope model (a, b) and the slope-1 intercept a'.

    Returns ``(a, b, a1)``, NaN where a row holds one class only (by weight), the slope fit did not
    converge or the slope is beyond ``_MAX_SLOPE`` (separation).
    """
    r = w.shape[0]
    wy = w @ y
    wn = w.sum(axis=1)
    both = (wy > 0) & (wy < wn)
    a, b, a1 = np.zeros(r), np.ones(r), np.zeros(r)
    # (quasi-)complete separation on one predictor: no finite slope; found directly instead of by divergence
    on, pos = w > 0, y == 1
    hi_neg = np.where(on & ~pos, x, -np.inf).max(1)
    lo_pos = np.where(on & pos, x, np.inf).min(1)
    hi_pos = np.where(on & pos, x, -np.inf).max(1)
    lo_neg = np.where(on & ~pos, x, np.inf).min(1)
    separated = both & ((hi_neg <= lo_pos) | (hi_pos <= lo_neg))
    done = ~both | separated
    done1 = ~both
    for _ in range(_ITERATIONS):
        live = np.flatnonzero(~done)  # only the fits still running are updated (cost falls as they finish)
        if live.size:
            wl = w[live]
            p = _sigmoid(a[live, None] + b[live, None] * x)
            res = wl * (y - p)
            h = wl * p * (1.0 - p)
            ga, gb = res.sum(1), res @ x
            haa, hab, hbb = h.sum(1), h @ x, h @ (x * x)
            det = haa * hbb - hab * hab
            with np.errstate(invalid="ignore", divide="ignore"):
                da = np.where(det > 0, (hbb * ga - hab * gb) / det, 0.0)
                db = np.where(det > 0, (haa * gb - hab * ga) / det, 0.0)
            norm = np.hypot(da, db)
            scale = np.where(norm > 5.0, 5.0 / np.maximum(norm, 1e-300), 1.0)  # damped far from the optimum
            a[live] += scale * da
            b[live] += scale * db
            done[live] = (norm < _TOL) | (np.abs(b[live]) > _MAX_SLOPE)
        live1 = np.flatnonzero(~done1)
        if live1.size:
            wl = w[live1]
            p1 = _sigmoid(a1[live1, None] + x)
            g1 = (wl * (y - p1)).sum(1)
            h1 = (wl * p1 * (1.0 - p1)).sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                d1 = np.clip(np.where(h1 > 0, g1 / h1, 0.0), -5.0, 5.0)
            a1[live1] += d1
            done1[live1] = np.abs(d1) < _TOL
        if not live.size and not live1.size:
            break
    ok = both & ~separated & (np.abs(b) <= _MAX_SLOPE) & done
    nan = np.nan
    return np.where(ok, a, nan), np.where(ok, b, nan), np.where(both & done1, a1, nan)


def recalibration(
    y: Sequence[int] | np.ndarray, s: Sequence[float] | np.ndarray, boot: PatientBootstrap | None = None
) -> dict[str, Any]:
    """Calibration slope and intercept (see the module docstring), with bootstrap intervals when given.

    Returns ``{"slope": CI-dict, "intercept": CI-dict, "slope_model_intercept": float, "method": str}``;
    without ``boot`` the intervals have NaN bounds.
    """
    y, s = _as_arrays(y, s)
    x = logit(s)
    yf = y.astype(np.float64)
    a, b, a1 = (v[0] for v in _fit(np.ones((1, y.size)), yf, x))
    level = boot.level if boot is not None else 0.95
    note = "" if np.isfinite(b) else "not estimable: one class only or the scores separate the classes"
    if boot is None:
        nan = float("nan")
        slope = CI(float(b), nan, nan, level, method="none", note=note)
        inter = CI(float(a1), nan, nan, level, method="none")
    else:
        bs, a1s = np.empty(boot.n_resamples), np.empty(boot.n_resamples)
        for c0, w in boot.row_weights():
            _, bb, aa = _fit(w, yf, x)
            bs[c0 : c0 + len(bb)], a1s[c0 : c0 + len(aa)] = bb, aa
        slope, inter = boot.interval(float(b), bs), boot.interval(float(a1), a1s)
        if slope.n_invalid:
            slope = replace(
                slope,
                note=f"{slope.n_invalid} of {boot.n_resamples} resamples undefined (one class, or scores "
                "that separate the classes: unbounded slope)",
            )
        if note:
            slope = replace(slope, note=note)
    return {
        "slope": slope.as_dict(),
        "intercept": inter.as_dict(),
        "slope_model_intercept": float(a),
        "method": "logistic recalibration on logit(score); intercept with the slope fixed at 1",
    }


def net_benefit(
    y: Sequence[int] | np.ndarray, s: Sequence[float] | np.ndarray, thresholds: Sequence[float]
) -> np.ndarray:
    """Net benefit ``TP/n - FP/n * pt/(1-pt)`` of ``score >= pt`` at every threshold probability ``pt``."""
    y, s = _as_arrays(y, s)
    pt = np.asarray(thresholds, dtype=np.float64)
    if y.size == 0:
        return np.full(pt.shape, np.nan)
    if not ((pt > 0) & (pt < 1)).all():
        raise ValueError("threshold probabilities must lie in (0, 1)")
    pred = s[None, :] >= pt[:, None]
    tp = (pred & (y == 1)).sum(1)
    fp = (pred & (y == 0)).sum(1)
    return tp / y.size - fp / y.size * pt / (1.0 - pt)


def _ranges(pt: np.ndarray, mask: np.ndarray) -> list[list[float]]:
    """Contiguous runs of ``mask`` as ``[first pt, last pt]`` pairs."""
    out, start = [], None
    for i, m in enumerate(mask):
        if m and start is None:
            start = i
        if start is not None and (not m or i == len(mask) - 1):
            end = i if m else i - 1
            out.append([float(pt[start]), float(pt[end])])
            start = None
    return out


def decision_curve(
    y: Sequence[int] | np.ndarray,
    s: Sequence[float] | np.ndarray,
    thresholds: Sequence[float] = DECISION_THRESHOLDS,
) -> dict[str, Any]:
    """Net benefit of the model, treat-all and treat-none over ``thresholds``, and where the model wins.

    ``useful`` lists the threshold ranges where the model's net benefit exceeds both references.
    """
    y, s = _as_arrays(y, s)
    pt = np.asarray(thresholds, dtype=np.float64)
    model = net_benefit(y, s, pt)
    prev = float(y.mean()) if y.size else float("nan")
    treat_all = prev - (1.0 - prev) * pt / (1.0 - pt)
    useful = model > np.maximum(treat_all, 0.0) + 1e-12
    return {
        "thresholds": pt.tolist(),
        "model": model.tolist(),
        "treat_all": treat_all.tolist(),
        "treat_none": 0.0,
        "prevalence": prev,
        "n": int(y.size),
        "useful": _ranges(pt, useful),
    }
