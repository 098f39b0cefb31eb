"""``compress``: the pipeline from a model and a recipe to a ``Compressed`` result — coverage checks,
pruning, quantization, export, ONNX Runtime quantization and the packed artifact."""
