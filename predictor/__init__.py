"""Load forecasting: quantiles of the per-second peak request rate over the next H minutes.

Run time (no torch): :mod:`predictor.runtime` (ONNX LSTM + fitted baselines from a model folder).
Training (torch): :mod:`predictor.train`. Traces: :mod:`predictor.traces`. Scores: :mod:`predictor.evaluate`.
"""
