"""Is a series what the model was trained for? Out-of-scope checks run before scoring.

The models were trained on contrast-enhanced (venous-phase) axial CT of the thighs (femoral level) and
pelvis (iliac level). A series that is something else still gets a score, but the score means nothing;
:func:`check_scope` returns warnings that ``predict`` prints, writes to ``summary.json`` and puts in the
worklist, so no such series ends as a silent "DVT suspected". The criteria are deliberately simple image
statistics, each with a documented threshold, plus, where the exported model has a vein detector (the
multitask UNet's segmentation head, the patch ResNet-50's vein grid), where that detector sees veins;
they catch the wrong modality, the wrong body region (head, chest, upper abdomen, a cropped field, levels
above or below the femoral/iliac veins), non-HU data and non-contrast scans, and do not certify that a
series *is* a femoral/iliac study.

Per slice, on the HU image smoothed with a Gaussian of :data:`SMOOTH_MM` (skipped for pixels coarser
than twice that; unsmoothed noise would fake enhanced pixels), morphology radii rounded down to whole
pixels (an operation is skipped below one pixel):

* **body**: pixels above :data:`BODY_HU`, opened with a disc of :data:`OPEN_MM` (detaches the table),
  components of at least :data:`MIN_PART_MM2` kept, holes filled;
* **bone**: pixels above :data:`BONE_HU`, dilated by :data:`BONE_MARGIN_MM`, holes filled (marrow and
  cancellous bone, which overlap the vessel HU range, go with it); **soft tissue** = body minus bone;
* **two legs**: the body's column profile (body height per column) has two lobes, each at least
  :data:`LEG_MIN_WIDTH_MM` wide and holding bone (the femurs), with a valley between them lower than
  :data:`LEG_VALLEY` of the smaller lobe's peak. A slice showing two legs passes the region checks below
  the border check (thighs are narrow one by one and may hold enhancing muscle).

A slice is **out of region** when (first reason that applies):

* no body part of :data:`MIN_PART_MM2` is found (a small field of view, or values that are not HU);
* the body touches the image border along more than :data:`MAX_BORDER` of it (a cropped or targeted
  reconstruction, or no air around the body: not HU);
* the body is narrower than :data:`MIN_BODY_WIDTH_MM` (a head, one limb, a small field of view);
* air inside the body (below :data:`AIR_HU`) covers more than :data:`MAX_INNER_AIR` of it: lungs (chest);
* enhanced soft tissue (:data:`VESSEL_HU`) covers more than :data:`MAX_ENHANCED` of the soft tissue:
  large enhancing organs (liver, spleen, kidneys: upper abdomen), not vessels.

At most 48 slices, evenly spread, are measured per series (slice ranges in warnings run over them); the
vein detector is asked about the same slices.

Series-level warnings (:class:`ScopeReport.warnings`):

* ``modality``: the DICOM Modality is not ``CT`` (NIfTI records none: CT is assumed and said so);
* ``orientation``: slices not axial (DICOM discovery already skips non-axial images; for NIfTI the
  affine's slice axis must lie within 45 degrees of head-foot);
* ``region``: more than :data:`MAX_OUT_OF_REGION` of the slices out of region (the reasons and slice
  ranges are named);
* ``HU``: less than :data:`MIN_AIR` of the pixels below :data:`AIR_BACKGROUND_HU` (air around the body,
  or in lungs/bowel of a cropped field): the values are not HU (stored values without the rescale, MR);
* ``soft tissue``: the peak of the soft-tissue histogram (0-150 HU, 5-HU bins) of the whole series outside
  :data:`MUSCLE_PEAK_HU` (muscle is 40-60 HU), or soft tissue below :data:`MIN_SOFT` of the body: values
  are not HU (NIfTI stored without scaling, MR) or not this anatomy;
* ``contrast``: enhanced-vessel pixels (:data:`VESSEL_HU` in soft tissue) cover less than
  :data:`MIN_VESSEL` of the soft tissue in more than half of the slices: no contrast or the wrong phase
  (DVT shows as a filling defect in an opacified vein);
* ``veins`` (only for a model with a vein detector: ``vein_detector`` returns fractions, see
  :meth:`dvt_search.families.base.ExportedScorer.vein_fractions`): the area where the detector sees vein
  (its vein probability >= 0.5, as a fraction of the slice times the slice's area in mm2) is below
  :data:`MIN_VEIN_MM2` on more than :data:`MAX_VEINLESS` of the measured slices: the series lies
  outside the femoral/iliac levels, or the model looks at anatomy it was not trained on. A model without a
  detector skips this check (``checks["vein_detector"]`` says so).

Thresholds (chosen on the phantom's femoral/iliac scans at 32-512 pixels, which all pass, and textbook
HU; the tests hold chest, upper-abdomen, head, cropped, MR, non-HU and unenhanced volumes that must fail,
and a tiny trained multitask UNet that finds veins on phantom thighs and none on a chest):

=====================  ====================  ==========================================================
body / air / bone      -500 / -400 / 400 HU  fat is -100, lung -850, cortical bone > 700
vessel range           90-250 HU             opacified veins 90-160, arteries to 210 (design sheet)
smallest body part     >= 60 cm2             one thigh is 110-250 cm2; a table strip is less
body width             >= 220 mm             both thighs or a pelvis are 280-450 mm, a head 150-190
border contact         <= 25 %               of the image edge (a body wider than the field touches it)
inner air              <= 10 %               of the body (lungs fill 30-60 % of a chest slice)
enhancing soft tissue  <= 15 %               thigh/pelvis 0.5-7 %; liver + spleen 30-50 % of an abdomen
out-of-region slices   <= 20 %               of the measured slices before the series warns
air pixels             >= 1 %                below -800 HU (the air around the body)
soft-tissue peak       20-80 HU              muscle 40-60; >= 10 % of the body in 0-150 HU
enhanced vessels       >= 0.1 %              of the soft tissue, on at least half of the slices
detected vein area     >= 20 mm2             one common femoral vein is ~80 mm2 (10 mm); a quarter of it
veinless slices        <= 50 %               of the measured slices before the series warns
=====================  ====================  ==========================================================

Nothing here reads or writes header values besides the modality.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dvt_search.data.context import volume_neighbours

SMOOTH_MM = 1.5
BODY_HU = -500.0
OPEN_MM = 4.0
MIN_PART_MM2 = 6000.0
BONE_HU = 400.0
BONE_MARGIN_MM = 3.0
AIR_HU = -400.0
VESSEL_HU = (90.0, 250.0)
MAX_BORDER = 0.25
MIN_BODY_WIDTH_MM = 220.0
MAX_INNER_AIR = 0.10
MAX_ENHANCED = 0.15
LEG_MIN_WIDTH_MM = 60.0
LEG_VALLEY = 0.6
MAX_OUT_OF_REGION = 0.2
MUSCLE_PEAK_HU = (20.0, 80.0)
MIN_SOFT = 0.10
MIN_VESSEL = 0.001
AIR_BACKGROUND_HU = -800.0
MIN_AIR = 0.01
MIN_VEIN_MM2 = 20.0
MAX_VEINLESS = 0.5

_MAX_SLICES = 48  # slices measured per series (evenly spread): enough for the statistics, bounded time


@dataclass
class SliceMeasures:
    """What :func:`measure_slice` finds in one slice (fractions of the body or soft-tissue area)."""

    width_mm: float
    border: float
    inner_air: float
    enhanced: float
    legs: bool
    soft_hist: np.ndarray = field(repr=False)
    body_pixels: int = 0

    def out_of_region(self) -> str | None:
        """Why the slice does not look like thigh or pelvis, or None."""
        if self.body_pixels == 0:
            return (
                f"no body cross-section of {MIN_PART_MM2 / 100:.0f} cm2 or more (small field of view, "
                "or not HU)"
            )
        if self.border > MAX_BORDER:
            return "body cut by the image border (cropped field of view, or not HU)"
        if self.legs:
            return None
        if self.width_mm < MIN_BODY_WIDTH_MM:
            return f"body narrower than {MIN_BODY_WIDTH_MM:.0f} mm (head, one limb or a small field)"
        if self.inner_air > MAX_INNER_AIR:
            return "air-filled lungs (chest)"
        if self.enhanced > MAX_ENHANCED:
            return "large enhancing organs (upper abdomen)"
        return None


@dataclass
class ScopeReport:
    """The verdict of :func:`check_scope`: ``warnings`` (empty when in scope) and the measures behind them."""

    warnings: list[str]
    checks: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not self.warnings

    def to_dict(self) -> dict[str, Any]:
        return {"in_scope": self.ok, "warnings": list(self.warnings), "checks": self.checks}


def _disc(radius_px: int) -> np.ndarray:
    r = int(radius_px)
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= r * r


def _px(mm: float, spacing: float) -> int:
    """Whole pixels within ``mm`` (0 on grids coarser than ``mm``: the operation is skipped)."""
    return int(mm / spacing)


def _two_legs(body: np.ndarray, bone: np.ndarray, col_mm: float, row_mm: float) -> bool:
    """Two lobes in the body's column profile, each wide enough and holding bone."""
    profile = body.sum(axis=0) * row_mm
    cols = np.flatnonzero(profile > 0)
    if cols.size < 3:
        return False
    lo, hi = int(cols[0]), int(cols[-1]) + 1
    p = profile[lo:hi]
    best = None
    third = max(1, len(p) // 4)
    for v in range(third, len(p) - third):  # valley in the middle half
        left, right = p[:v].max(), p[v:].max()
        depth = p[v] / max(1e-6, min(left, right))
        if best is None or depth < best[0]:
            best = (depth, v)
    if best is None or best[0] > LEG_VALLEY:
        return False
    v = lo + best[1]
    bone_cols = bone.any(axis=0)
    widths = ((v - lo) * col_mm, (hi - v) * col_mm)
    return bool(min(widths) >= LEG_MIN_WIDTH_MM and bone_cols[lo:v].any() and bone_cols[v:hi].any())


def measure_slice(hu: np.ndarray, spacing_rc: Sequence[float]) -> SliceMeasures:
    """Body, bone, air and enhancement measures of one HU slice (see the module docstring)."""
    from scipy import ndimage

    row_mm, col_mm = (float(s) for s in spacing_rc)
    px = min(row_mm, col_mm)
    img = np.nan_to_num(np.asarray(hu, dtype=np.float32), nan=-1000.0, posinf=3071.0, neginf=-1024.0)
    sigma = SMOOTH_MM / px
    if sigma >= 0.5:
        img = ndimage.gaussian_filter(img, sigma=(SMOOTH_MM / row_mm, SMOOTH_MM / col_mm))
    raw = img > BODY_HU
    r = _px(OPEN_MM, px)
    opened = ndimage.binary_opening(raw, structure=_disc(r)) if r >= 1 else raw
    labels, n = ndimage.label(opened)
    body = np.zeros_like(raw)
    if n:
        areas = ndimage.sum_labels(opened, labels, index=np.arange(1, n + 1)) * row_mm * col_mm
        keep = np.flatnonzero(areas >= MIN_PART_MM2) + 1
        body = ndimage.binary_fill_holes(np.isin(labels, keep))
    n_body = int(body.sum())
    if n_body == 0:
        return SliceMeasures(0.0, 0.0, 0.0, 0.0, False, np.zeros(30), 0)
    m = _px(BONE_MARGIN_MM, px)
    bone = img > BONE_HU
    if m >= 1:
        bone = ndimage.binary_dilation(bone, structure=_disc(m))
    bone = ndimage.binary_fill_holes(bone) & body
    soft = body & ~bone
    n_soft = max(1, int(soft.sum()))
    edge = np.concatenate([body[0], body[-1], body[:, 0], body[:, -1]])
    cols = np.flatnonzero(body.any(axis=0))
    values = img[soft]
    enhanced = float(((values >= VESSEL_HU[0]) & (values <= VESSEL_HU[1])).sum()) / n_soft
    hist, _ = np.histogram(values, bins=30, range=(0.0, 150.0))
    return SliceMeasures(
        width_mm=float((cols[-1] - cols[0] + 1) * col_mm),
        border=float(edge.mean()),
        inner_air=float((body & (img < AIR_HU)).sum()) / n_body,
        enhanced=enhanced,
        legs=_two_legs(body, bone, col_mm, row_mm),
        soft_hist=hist,
        body_pixels=n_body,
    )


def _ranges(flagged: Sequence[int], measured: Sequence[int]) -> str:
    """``0-3, 7, 9-10``: runs of flagged slices, a run spanning consecutive *measured* slices (sorted)."""
    pos = {k: i for i, k in enumerate(measured)}
    runs: list[list[int]] = []
    for k in flagged:
        if runs and pos[k] == pos[runs[-1][-1]] + 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    return ", ".join(f"{r[0]}" if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def check_veins(
    fractions: Sequence[float] | np.ndarray, slice_area_mm2: float, slices: Sequence[int]
) -> tuple[str | None, dict[str, Any]]:
    """The ``veins`` criterion: a warning (or None) and its measures.

    Args:
        fractions: per measured slice, the fraction of the slice where the vein detector sees vein.
        slice_area_mm2: the area one slice covers (rows x columns x pixel spacing).
        slices: the measured slices' indices (named in the warning), as many as ``fractions``.

    Raises:
        ValueError: ``fractions`` and ``slices`` differ in length, or a fraction is outside [0, 1].
    """
    fr = np.asarray(fractions, dtype=np.float64).reshape(-1)
    if len(fr) != len(slices):
        raise ValueError(f"vein detector gave {len(fr)} fractions for {len(slices)} slices")
    if not np.all((fr >= 0) & (fr <= 1)):
        raise ValueError(f"vein fractions must lie in [0, 1], got {fr.min():.3g}..{fr.max():.3g}")
    area = fr * float(slice_area_mm2)
    veinless = [int(k) for k, a in zip(slices, area) if a < MIN_VEIN_MM2]
    checks = {
        "vein_detector": "asked",
        "vein_slices_measured": len(fr),
        "slices_without_veins": len(veinless),
        "median_vein_area_mm2": round(float(np.median(area)), 1) if len(area) else float("nan"),
    }
    if not len(fr) or len(veinless) <= MAX_VEINLESS * len(fr):
        return None, checks
    return (
        f"the model's vein detector finds (almost) no vein (under {MIN_VEIN_MM2:.0f} mm2) on "
        f"{len(veinless)} of {len(fr)} slices (slice(s) {_ranges(veinless, [int(k) for k in slices])}): "
        "outside the femoral/iliac levels, or not the anatomy the model was trained on"
    ), checks


def check_scope(
    volume_hu: np.ndarray,
    spacing_rc: Sequence[float],
    *,
    modality: str | None,
    axial: bool = True,
    vein_detector: Callable[[list[np.ndarray]], np.ndarray | None] | None = None,
    context_slices: int = 0,
) -> ScopeReport:
    """Out-of-scope warnings for a ``[Z, H, W]`` HU volume (see the module docstring for the criteria).

    Args:
        volume_hu: the series in HU, slice 0 most inferior.
        spacing_rc: in-plane pixel spacing (row, column) in mm.
        modality: the DICOM Modality, or None where the format records none (NIfTI: CT assumed).
        axial: whether the slices are axial.
        vein_detector: the exported model's ``vein_fractions`` (HU slices -> per-slice fraction of the
            slice seen as vein, or None without a detector); asked on the measured slices only.
        context_slices: the model's ``k``: the detector is handed each measured slice's ``[2k+1, H, W]``
            context stack (:func:`dvt_search.data.context.volume_neighbours`) instead of the 2-D slice.
    """
    warnings: list[str] = []
    checks: dict[str, Any] = {"modality": modality or "not recorded (CT assumed)"}
    if modality is not None and modality.upper() != "CT":
        warnings.append(f"modality {modality or 'unknown'}, not CT: the model was trained on CT only")
    if not axial:
        warnings.append("slices are not axial: the model was trained on axial slices")
    z = len(volume_hu)
    if z == 0:
        return ScopeReport(warnings + ["no slices"], checks)
    picks = np.unique(np.linspace(0, z - 1, min(z, _MAX_SLICES)).round().astype(int))
    measures = {int(k): measure_slice(volume_hu[k], spacing_rc) for k in picks}
    reasons = {k: m.out_of_region() for k, m in measures.items()}
    bad = {k: r for k, r in reasons.items() if r is not None}
    checks.update(
        slices_measured=len(measures),
        out_of_region=len(bad),
        two_leg_slices=sum(m.legs for m in measures.values()),
        median_inner_air=round(float(np.median([m.inner_air for m in measures.values()])), 4),
        median_enhanced=round(float(np.median([m.enhanced for m in measures.values()])), 4),
        median_width_mm=round(float(np.median([m.width_mm for m in measures.values()])), 1),
    )
    if len(bad) > MAX_OUT_OF_REGION * len(measures):
        by_reason: dict[str, list[int]] = {}
        for k, r in bad.items():
            by_reason.setdefault(r, []).append(k)
        detail = "; ".join(f"{r}: slice(s) {_ranges(ks, picks.tolist())}" for r, ks in by_reason.items())
        warnings.append(
            f"{len(bad)} of {len(measures)} slices do not look like thigh or pelvis ({detail}); the model "
            "was trained on femoral/iliac levels only"
        )
    air = float(np.mean([(volume_hu[k] < AIR_BACKGROUND_HU).mean() for k in picks]))
    checks["air_fraction"] = round(air, 4)
    if air < MIN_AIR:
        warnings.append(
            f"values not HU: {100 * air:.1f}% of the pixels below {AIR_BACKGROUND_HU:.0f} HU (no air around "
            "the body): stored values without the DICOM rescale, or not CT"
        )
    hist = np.sum([m.soft_hist for m in measures.values()], axis=0)
    n_body = sum(m.body_pixels for m in measures.values())
    soft_frac = float(hist.sum()) / max(1, n_body)
    peak = float(5.0 * np.argmax(hist) + 2.5) if hist.sum() else float("nan")
    checks.update(soft_tissue_peak_hu=peak, soft_tissue_fraction=round(soft_frac, 4))
    if n_body and (soft_frac < MIN_SOFT or not MUSCLE_PEAK_HU[0] <= peak <= MUSCLE_PEAK_HU[1]):
        warnings.append(
            f"soft tissue implausible (histogram peak {peak:.0f} HU, {100 * soft_frac:.0f}% of the body in "
            f"0-150 HU; muscle is 40-60 HU): values may not be HU, or this is not thigh/pelvis"
        )
    body_slices = [m for m in measures.values() if m.body_pixels]
    unenhanced = [m for m in body_slices if m.enhanced < MIN_VESSEL]
    checks["slices_without_enhanced_vessels"] = len(unenhanced)
    if body_slices and len(unenhanced) > 0.5 * len(body_slices):
        warnings.append(
            f"no enhanced vessels ({VESSEL_HU[0]:.0f}-{VESSEL_HU[1]:.0f} HU) in {len(unenhanced)} of "
            f"{len(body_slices)} slices: not a venous-phase contrast CT?"
        )
    if vein_detector is not None and context_slices:
        rows = volume_neighbours(len(volume_hu), context_slices)
        fractions = vein_detector([np.asarray(volume_hu)[rows[int(k)]] for k in picks])
    elif vein_detector is not None:
        fractions = vein_detector([volume_hu[k] for k in picks])
    else:
        fractions = None
    if fractions is None:
        checks["vein_detector"] = "none (the model has no vein detector)"
    else:
        rows, cols = volume_hu.shape[1:3]
        area_mm2 = rows * cols * float(spacing_rc[0]) * float(spacing_rc[1])
        vein_warning, vein_checks = check_veins(fractions, area_mm2, picks.tolist())
        checks.update(vein_checks)
        if vein_warning:
            warnings.append(vein_warning)
    return ScopeReport(warnings, checks)
