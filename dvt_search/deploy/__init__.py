"""Deployment: exported winners (TorchScript / ONNX / SIFT arrays + model cards), pulled runs, predictions.

``export`` writes a self-describing folder per selected family, ``preprocess`` states its input contract,
``predict`` scores a new DICOM series with it, ``pull`` fetches a cluster run for local use.
"""
