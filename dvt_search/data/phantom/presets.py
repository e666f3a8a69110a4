"""Tissue codes, nominal CT numbers and generator presets of the synthetic CT phantom.

The numbers follow the design sheet (``shared/design.md``): venous-phase vein 90-160 HU, thrombus
30-70 HU, muscle 40-60, fat -50 to -110, cancellous bone 150-300, cortical bone 700-3000, noise SD
10-25 HU, common femoral vein ~10.5 mm and artery ~8 mm, pixel 0.68-0.98 mm at 512^2.
"""

from __future__ import annotations

from dataclasses import dataclass

# Tissue codes of the label map that :func:`dvt_search.data.phantom.render.render_slice` returns.
AIR = 0
TABLE = 1
SKIN = 2
FAT = 3
MUSCLE = 4
CORTICAL = 5
CANCELLOUS = 6
ARTERY = 7
VEIN = 8  # lumen of a target (masked) vein, opacified blood
CLOT = 9  # thrombus inside a target vein (also inside the vein mask)
OTHER_VEIN = 10  # saphenous / profunda veins: opacified, not in the mask
BOWEL_WALL = 11
BOWEL_AIR = 12
FLUID = 13  # bowel fluid, bladder urine
BOWEL_CONTRAST = 14  # oral contrast
NODE = 15  # lymph node (soft tissue next to the vessels: a mimic of an occluded vein)

N_TISSUES = 16

TISSUE_NAMES: dict[int, str] = {
    AIR: "air",
    TABLE: "table",
    SKIN: "skin",
    FAT: "fat",
    MUSCLE: "muscle",
    CORTICAL: "cortical",
    CANCELLOUS: "cancellous",
    ARTERY: "artery",
    VEIN: "vein",
    CLOT: "clot",
    OTHER_VEIN: "other_vein",
    BOWEL_WALL: "bowel_wall",
    BOWEL_AIR: "bowel_air",
    FLUID: "fluid",
    BOWEL_CONTRAST: "bowel_contrast",
    NODE: "node",
}

#: Nominal HU range of each tissue before noise, streaks and partial-volume blur (inclusive).
TISSUE_HU: dict[int, tuple[float, float]] = {
    AIR: (-1000.0, -1000.0),
    TABLE: (100.0, 250.0),
    SKIN: (20.0, 60.0),
    FAT: (-110.0, -50.0),
    MUSCLE: (40.0, 60.0),
    CORTICAL: (700.0, 3000.0),
    CANCELLOUS: (150.0, 300.0),
    ARTERY: (90.0, 210.0),
    VEIN: (90.0, 160.0),
    CLOT: (30.0, 70.0),
    OTHER_VEIN: (80.0, 160.0),
    BOWEL_WALL: (50.0, 90.0),
    BOWEL_AIR: (-1000.0, -900.0),
    FLUID: (0.0, 25.0),
    BOWEL_CONTRAST: (200.0, 400.0),
    NODE: (30.0, 55.0),
}

#: Representable range of stored volumes (the usual 12-bit CT range).
HU_MIN = -1024
HU_MAX = 3071

#: Smallest clot radius (mm) that is drawn; every drawn clot makes its slice positive.
MIN_CLOT_RADIUS_MM = 1.0


@dataclass(frozen=True)
class Preset:
    """Knobs of the generator that set how hard the detection task is.

    Ranges are ``(low, high)`` of uniform draws made once per scan (or per clot / mimic segment).
    """

    name: str
    noise_sd: tuple[float, float]  # HU, per pixel at 512^2 (scaled down for coarser grids)
    blur_mm: tuple[float, float]  # partial-volume Gaussian sigma
    streak_hu: tuple[float, float]  # depth of beam-hardening streaks between the bones
    vein_hu: tuple[float, float]
    clot_hu: tuple[float, float]
    scan_clot_prob: float  # probability that a scan holds any clot
    extra_segment_prob: float  # probability of a second clot segment in the scan
    segment_frac: tuple[float, float]  # clot segment length as a fraction of the scan's slices
    occlusive_prob: float
    partial_frac: tuple[float, float]  # clot radius / lumen radius at the middle of a partial clot
    taper_frac: float  # clot radius / lumen radius at the ends of a segment (small clots)
    expansion: tuple[float, float]  # relative vein distension under an occlusive clot
    mixing_rate: float  # expected number of mixing-artifact segments per vein per scan
    mixing_hu: tuple[float, float]  # HU of unopacified inflowing blood inside the vein
    node_rate: float  # expected lymph nodes per side per scan
    pad_mm: tuple[float, float]  # fat around the vessel pair (contrast of an occluded vein)
    edema_prob: float  # probability that a clot segment has perivenous edema (hazy fat)
    edema_hu: tuple[float, float]  # HU added to the fat around a clotted vein at the segment middle


PRESETS: dict[str, Preset] = {
    "standard": Preset(
        name="standard",
        noise_sd=(10.0, 25.0),
        blur_mm=(0.45, 0.8),
        streak_hu=(15.0, 55.0),
        vein_hu=(100.0, 160.0),
        clot_hu=(30.0, 65.0),
        scan_clot_prob=0.85,
        extra_segment_prob=0.35,
        segment_frac=(0.2, 0.6),
        occlusive_prob=0.6,
        partial_frac=(0.4, 0.85),
        taper_frac=0.2,
        expansion=(0.3, 0.8),
        mixing_rate=1.0,
        mixing_hu=(60.0, 100.0),
        node_rate=1.0,
        pad_mm=(3.0, 7.0),
        edema_prob=0.5,
        edema_hu=(20.0, 60.0),
    ),
    "easy": Preset(
        name="easy",
        noise_sd=(5.0, 9.0),
        blur_mm=(0.4, 0.5),
        streak_hu=(5.0, 15.0),
        vein_hu=(130.0, 160.0),
        clot_hu=(30.0, 40.0),
        scan_clot_prob=0.9,
        extra_segment_prob=0.35,
        segment_frac=(0.25, 0.6),
        occlusive_prob=1.0,
        partial_frac=(0.75, 0.95),
        taper_frac=0.8,
        expansion=(0.7, 1.1),
        mixing_rate=0.15,
        mixing_hu=(100.0, 120.0),
        node_rate=0.0,
        pad_mm=(5.0, 9.0),
        edema_prob=1.0,
        edema_hu=(40.0, 70.0),
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; raises ``ValueError`` listing the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown phantom preset {name!r}; choose one of {sorted(PRESETS)}") from None
