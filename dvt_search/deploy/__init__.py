"""Deployment: exported winners (TorchScript / ONNX / SIFT arrays + model cards), pulled runs, predictions.

``export`` writes a self-describing folder per selected family, ``preprocess`` states its input contract,
``predict`` scores a new DICOM series or NIfTI volume (read by ``inputs``, checked by ``scope`` for being
what the model was trained on), ``worklist`` scores a batch into one table, ``pull`` fetches a cluster
run for local use.
"""
