"""Deployment: ONNX export of configs' models (``tools/deploy/export_onnx.py``)."""
