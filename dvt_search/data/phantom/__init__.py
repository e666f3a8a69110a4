"""The embedded default dataset: a VITAL-shaped synthetic CT phantom with DVT labels and vein masks.

:func:`generate` writes the dataset layout every later stage reads (``<out>/manifest.parquet`` plus
``<out>/volumes/<scan_id>/{image,mask}.npy``): patients with 1-4 studies of 1-3 scans each, scans of
varying length at femoral (thigh) or iliac (pelvis) level, venous-phase contrast, thrombi (filling
defects spanning consecutive slices of one femoral/iliac vein) and confounders (unopacified inflow
mimicking clot, noise, beam-hardening streaks, small clots, partial-volume blur). The slice label is 1
iff a clot is drawn in that slice; the mask covers the lumen of both target veins, clotted or not.

Everything is deterministic per ``seed``: each scan draws from its own generator seeded by
``(seed, patient, study, scan)``, so ``workers > 1`` gives byte-identical output.

Modules: :mod:`.dataset` (the dataset plan and writer), :mod:`.presets` (tissue codes, HU values, presets), :mod:`.shapes` and
:mod:`.anatomy` (geometry in mm), :mod:`.lesions` (clots and mimics),
:mod:`.raster` and :mod:`.render` (pixels), :mod:`.dicom` (DICOM export).
"""

from .dataset import MANIFEST_NAME, VOLUMES_DIR, ScanPlan, generate, plan_dataset, render_plan, scan_spec
from .dicom import export_scan_dicom, write_dicom_series

__all__ = [
    "MANIFEST_NAME",
    "VOLUMES_DIR",
    "ScanPlan",
    "export_scan_dicom",
    "generate",
    "plan_dataset",
    "render_plan",
    "scan_spec",
    "write_dicom_series",
]
