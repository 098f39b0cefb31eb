"""ONNX and ONNX Runtime: export, ONNX files as inputs, ONNX Runtime's int8 / float16 / weight-only
quantizers with squeezelab's checks, graph-level int8 choices, sessions and execution providers, and the
environment a figure was measured in."""
