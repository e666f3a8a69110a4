"""Statistics of the comparison (no Ray, no torch): AUC and its tests, patient bootstrap, the comparison.

``measures`` (AUC, DeLong, Holm, operating points, calibration, scan aggregation) -> ``bootstrap``
(patient-level resampling) -> ``compare`` (the comparison document of the selected models on test).
"""
