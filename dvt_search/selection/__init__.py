"""Model selection (no Ray here): every trial as a table, the winners on validation, the one touch of test.

``leaderboard`` (every trial of a run as one tidy table) -> ``selector`` (winners on validation metrics
only) -> ``evaluate`` (the selected checkpoints score validation and test) ; ``models`` loads any family's
checkpoint. The statistics of the comparison live in :mod:`dvt_search.stats`.
"""
