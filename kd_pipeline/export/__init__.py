"""The export stage's library: the deployable bundle (ONNX, card, predict command)."""
