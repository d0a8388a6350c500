"""Load a scorer from a model directory: a causal LM, a sequence classifier, or a bare encoder.

A bare encoder (``BertModel``, as all-MiniLM-L6-v2 ships) gets a fresh classification head of
one logit for two labels, else one per label; the distill stage then trains it on teacher
scores. A saved classifier keeps its head (prune stages never touch it).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from slmkit.errors import InputError
from slmkit.tasks.config import TaskConfig
from slmkit.tasks.scorers import make_scorer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def architecture(model_dir: Path) -> str:
    """The first entry of config.json's ``architectures`` ('' when absent)."""
    cfg = Path(model_dir) / "config.json"
    if not cfg.is_file():
        raise InputError(f"{model_dir}: no config.json; expected a Hugging Face model directory")
    archs = json.loads(cfg.read_text()).get("architectures") or [""]
    return archs[0]


def head_size(task: TaskConfig) -> int:
    """Logits of a fresh head: one binary logit for two labels, else one per label."""
    return 1 if len(task.labels) == 2 else len(task.labels)


def load_scoring_model(model_dir: Path, task: TaskConfig, dtype: str = "float32"):
    """(model, tokenizer) ready for :func:`make_scorer`, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    arch, kwargs = architecture(model_dir), {"dtype": DTYPES[dtype]}
    try:
        if arch.endswith("ForCausalLM"):
            model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
        elif arch.endswith("ForSequenceClassification"):
            model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), **kwargs)
        else:  # a bare encoder: add a head sized for the task
            model = AutoModelForSequenceClassification.from_pretrained(
                str(model_dir), num_labels=head_size(task), **kwargs
            )
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as exc:
        raise InputError(f"{model_dir}: cannot load as a scorer ({arch or 'unknown architecture'}): {exc}") from None
    return model.eval(), tokenizer


def load_scorer(model_dir: Path, task: TaskConfig, dtype: str = "float32"):
    """The scorer of a model directory (see :mod:`slmkit.tasks.scorers`)."""
    model, tokenizer = load_scoring_model(model_dir, task, dtype)
    return make_scorer(model, tokenizer, task)
