"""Measuring models: per-sample metrics, interleaved latency, the statistics behind every figure,
``Point`` / ``Settings``, ``measure``, ``measure_pair`` and side-by-side comparisons."""
