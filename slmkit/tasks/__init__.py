"""Predictive tasks: ranking and classification scorers, their metrics, losses and export.

- ``config``: the ``task:`` recipe section (``TaskConfig``) and score-KD settings.
- ``data``: rows (context, item, label, group) loaded through `datasets` and validated.
- ``scorers``: causal-LM verbalizer scorer and sequence-classifier scorer -> label logits [B, K].
- ``prefix``: prefix-shared scoring of many candidates against one context's KV cache.
- ``metrics``: AUC, accuracy, log loss, ECE, NDCG@k, MRR (pure numpy).
- ``losses``: KL / BCE / listwise score distillation mixed with the hard-label loss (pure torch).
- ``onnx_export``: classifier / scorer export to ONNX with int8 dynamic quantization, verified.
"""
