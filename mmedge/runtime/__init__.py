"""The thin runtime: numpy + Pillow + one backend (no torch for onnxruntime)."""
