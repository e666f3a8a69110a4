"""Matplotlib figures of the report, each returned as PNG bytes (Agg backend, no display needed)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from dvt_search.engine.metrics import roc_curve
from dvt_search.report.history import StudyHistory, running_best

PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d", "#4b5563")
_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "figure.dpi": 110,
    "savefig.bbox": "tight",
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _integer_x(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _png(fig: Any) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def colours(families: Sequence[str]) -> dict[str, str]:
    """A fixed colour per family, in the given order (the same family keeps its colour in every figure)."""
    return {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(families)}


def roc_figure(test: pd.DataFrame, aucs: Mapping[str, str], palette: Mapping[str, str]) -> bytes:
    """ROC curves of every winner on the test slices (paper Fig. 5 right), AUC with CI in the legend."""
    plt = _plt()
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(4.8, 4.2))
        ax.plot([0, 1], [0, 1], ls="--", c="#9ca3af", lw=1, label="chance")
        for fam, g in test.groupby("family", sort=False):
            if g["label"].nunique() < 2:
                continue
            fpr, tpr, _ = roc_curve(g["label"].to_numpy(), g["score"].to_numpy())
            ax.plot(fpr, tpr, lw=1.8, c=palette[fam], label=f"{fam}  {aucs.get(fam, '')}")
        ax.set(
            xlabel="1 - specificity",
            ylabel="sensitivity",
            xlim=(0, 1),
            ylim=(0, 1.01),
            title="ROC on test slices",
        )
        ax.legend(loc="lower right", fontsize=7.5, frameon=False)
        return _png(fig)


def confusion_figure(confusions: Mapping[str, Mapping[str, Any]]) -> bytes:
    """One confusion matrix per winner in the paper's Fig. 2 layout (rows predicted 1/0, columns actual)."""
    plt = _plt()
    n = max(1, len(confusions))
    with plt.rc_context({**_STYLE, "axes.grid": False}):
        fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.4), squeeze=False)
        for ax, (fam, c) in zip(axes[0], confusions.items()):
            m = np.array([[c["tp"], c["fp"]], [c["fn"], c["tn"]]])
            ax.imshow(m, cmap="Blues", vmin=0, vmax=max(1, m.max()))
            for (i, j), v in np.ndenumerate(m):
                tag = [["TP", "FP"], ["FN", "TN"]][i][j]
                ax.text(
                    j,
                    i,
                    f"{v}\n{tag}",
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white" if v > m.max() / 2 else "#111827",
                )
            ax.set_xticks([0, 1], ["actual 1", "actual 0"])
            ax.set_yticks([0, 1], ["pred 1", "pred 0"])
            ax.set_title(f"{fam}\nthreshold {c['threshold']:.3g}", fontsize=9)
        return _png(fig)


def calibration_figure(bins: Mapping[str, pd.DataFrame], palette: Mapping[str, str]) -> bytes:
    """Reliability curves (observed DVT fraction against mean predicted probability per bin)."""
    plt = _plt()
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(4.8, 4.2))
        ax.plot([0, 1], [0, 1], ls="--", c="#9ca3af", lw=1, label="perfect")
        for fam, b in bins.items():
            b = b[b["count"] > 0]
            ax.plot(b["mean_score"], b["frac_positive"], marker="o", ms=3, lw=1.5, c=palette[fam], label=fam)
        ax.set(
            xlabel="mean predicted probability",
            ylabel="observed DVT fraction",
            xlim=(0, 1),
            ylim=(0, 1),
            title="Calibration on test slices",
        )
        ax.legend(loc="upper left", fontsize=7.5, frameon=False)
        return _png(fig)


def learning_curves_figure(
    curves: Mapping[str, list[tuple[str, list[dict[str, Any]], bool]]],
    palette: Mapping[str, str],
    metric: str,
) -> bytes:
    """Validation metric per epoch of every trial (winner bold), one panel per family."""
    plt = _plt()
    fams = [f for f, c in curves.items() if c]
    n = max(1, len(fams))
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.8), squeeze=False, sharey=True)
        for ax, fam in zip(axes[0], fams):
            for _tid, curve, is_winner in curves[fam]:
                pts = [(r["epoch"], r[metric]) for r in curve if r.get(metric) is not None]
                if not pts:
                    continue
                x, y = zip(*pts)
                ax.plot(
                    x,
                    y,
                    c=palette[fam],
                    lw=2.2 if is_winner else 0.8,
                    alpha=1 if is_winner else 0.35,
                    marker="o" if len(x) == 1 else None,
                    ms=3,
                )
            last = max((int(r["epoch"]) for _t, curve, _w in curves[fam] for r in curve), default=1)
            ax.set(title=fam, xlabel="epoch", xlim=(0.5, last + 0.5))
            _integer_x(ax)
        axes[0][0].set_ylabel(metric)
        return _png(fig)


def multitask_losses_figure(curves: list[tuple[str, list[dict[str, Any]], bool]]) -> bytes | None:
    """Training loss components of the multitask trials (paper Fig. 3): classification, pixel BCE, Dice."""
    parts = (
        ("train_loss_cls", "classification BCE"),
        ("train_loss_pix", "pixel-wise BCE"),
        ("train_loss_dice", "Dice"),
    )
    if not any(any(p in r for r in c for p, _ in parts) for _, c, _ in curves):
        return None
    plt = _plt()
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(4.8, 3.6))
        for (key, label), colour in zip(parts, PALETTE):
            for _tid, curve, is_winner in curves:
                pts = [(r["epoch"], r[key]) for r in curve if r.get(key) is not None]
                if not pts:
                    continue
                x, y = zip(*pts)
                ax.plot(
                    x,
                    y,
                    c=colour,
                    lw=2 if is_winner else 0.8,
                    alpha=1 if is_winner else 0.3,
                    marker="o",
                    ms=2.5,
                    label=label if is_winner else None,
                )
        ax.set(xlabel="epoch", ylabel="training loss", title="Multitask loss components")
        _integer_x(ax)
        ax.legend(frameon=False, fontsize=7.5)
        return _png(fig)


def history_figure(h: StudyHistory, colour: str) -> bytes | None:
    """Optuna optimisation history of one family: each trial's value and the best so far."""
    t = h.trials.dropna(subset=["value"])
    if t.empty:
        return None
    plt = _plt()
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(3.6, 2.7))
        ax.scatter(t["number"], t["value"], s=14, c=colour, alpha=0.6, label="trial")
        ax.step(
            t["number"],
            running_best(t["value"].to_numpy(), h.direction),
            where="post",
            c="#111827",
            lw=1.4,
            label="best so far",
        )
        ax.set(xlabel="trial number", ylabel="objective", title=f"{h.family}: optimisation history")
        _integer_x(ax)
        ax.legend(frameon=False, fontsize=7)
        return _png(fig)


def importance_figure(h: StudyHistory, colour: str) -> bytes | None:
    """Horizontal bars of parameter importances (method in the title)."""
    if not h.importances:
        return None
    plt = _plt()
    items = sorted(h.importances.items(), key=lambda kv: kv[1])[-12:]
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(3.6, 0.35 * len(items) + 1.0))
        ax.barh([k for k, _ in items], [v for _, v in items], color=colour)
        ax.set(xlabel="importance", title=f"{h.family}: parameter importance")
        ax.grid(axis="y", alpha=0)
        return _png(fig)


def cam_figure(cases: list[dict[str, Any]]) -> bytes | None:
    """Grid of mis-classified test slices with their Grad-CAM overlay (paper Fig. 5 left)."""
    if not cases:
        return None
    plt = _plt()
    cols = min(4, len(cases))
    rows = -(-len(cases) // cols)
    with plt.rc_context({**_STYLE, "axes.grid": False}):
        fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 3.0 * rows), squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        for ax, c in zip(axes.ravel(), cases):
            ax.imshow(c["image"], cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
            ax.imshow(c["cam"], cmap="jet", alpha=0.4, vmin=0, vmax=1, interpolation="bilinear")
            ax.set_title(c["caption"], fontsize=7, linespacing=1.3)
        return _png(fig)


def decision_curve_figure(curves: Mapping[str, Mapping[str, Any]], palette: Mapping[str, str]) -> bytes:
    """Net benefit against threshold probability per winner, with treat-all and treat-none references.

    ``curves`` maps a family to its stored decision curve (``thresholds``, ``model``, ``treat_all``,
    ``prevalence``); all are on the same test scans, so they share the treat-all line.
    """
    plt = _plt()
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(4.8, 3.8))
        prev = 0.0
        first = True
        for fam, c in curves.items():
            pt = np.asarray(c["thresholds"], dtype=float)
            if first:
                ax.plot(pt, c["treat_all"], c="#6b7280", lw=1.2, ls="--", label="treat all")
                ax.axhline(0.0, c="#111827", lw=1.0, ls=":", label="treat none")
                first = False
            prev = max(prev, float(c["prevalence"]))
            ax.plot(pt, c["model"], c=palette[fam], lw=1.8, label=fam)
        top = max(prev, 0.05)
        ax.set(
            xlabel="threshold probability",
            ylabel="net benefit",
            xlim=(0, 1),
            ylim=(-0.1 * top - 0.02, 1.15 * top + 0.02),
            title="Decision curve on test scans",
        )
        ax.legend(loc="upper right", fontsize=7.5, frameon=False)
        return _png(fig)
