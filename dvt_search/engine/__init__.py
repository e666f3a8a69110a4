"""The shared training engine of the torch families (no Ray here).

* :mod:`.loop` — the epoch-at-a-time train/eval loop (CPU and CUDA, bf16 + channels_last on CUDA, seeded,
  DDP through hooks the runtime supplies).
* :mod:`.optim` — :class:`~.optim.LoopConfig`, Adam and the step / cosine / constant LR schedules.
* :mod:`.losses` — the paper's eqs. 1-4 and the weighted patch BCE.
* :mod:`.metrics` — ROC AUC, Youden / fixed-sensitivity thresholds, precision/recall, Dice, patch AUC.
* :mod:`.cam` — Grad-CAM and CAM heatmaps.
* :mod:`.errors` — :class:`~.errors.FitError` (torch-free).
* :mod:`.checkpoint`, :mod:`.device` — weights-only tensor files, devices,
  seeding and loaders.
"""
