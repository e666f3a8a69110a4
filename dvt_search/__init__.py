"""dvt-search: distributed hyperparameter search and model selection for DVT detection on CT slices."""

__version__ = "0.1.0"
