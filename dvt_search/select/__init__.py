"""From a finished search to a deployable model (no Ray here).

``leaderboard`` (every trial as a table) -> ``selector`` (winners on validation) -> ``evaluate`` (the one
touch of the test partition) -> ``compare`` / ``stats`` / ``bootstrap`` (intervals and tests) ->
``report`` (HTML + Markdown) and ``export`` (TorchScript / ONNX / SIFT arrays + model cards);
``pull`` fetches a cluster run, ``predict`` scores a DICOM series with an exported model.
"""
