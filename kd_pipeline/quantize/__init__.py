"""The quantize stage's library: ONNX export, accuracy-controlled int8, QAT, the integer-kernel proof."""
