"""Statistics of the comparison (no Ray, no torch): AUC and its tests, patient bootstrap, the comparison.

``measures`` (AUC, DeLong, Holm, operating points, calibration, scan aggregation) -> ``bootstrap``
(patient-level resampling, stratified by DVT status) -> ``clustered`` (Obuchowski's clustered AUC variance:
intervals and the paired test of the significance rule) -> ``compare`` (the comparison document of the
selected models on test).
"""
