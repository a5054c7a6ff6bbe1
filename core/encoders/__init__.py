"""Frozen second-opinion encoders (CLIP ONNX) with their own preprocessing specs."""
