"""Quantize a causal LM for a serving runtime: ONNX Runtime GenAI, GGUF, torchao, llm-compressor.

Each backend lives in its own module; :mod:`slmkit.quantize.stage` holds the closed registry.
"""
