"""LoRA on a loaded model through peft: which layers exist, adapters on, adapters merged off.

The adapters are injected into the model in place (``peft.get_peft_model`` wraps it, the wrapped
model keeps its class and forward), so the training loops that take a plain model train it
unchanged; ``merge`` folds ``(alpha / r) * B A`` into each adapted weight and returns the plain
model, which saves as a Hugging Face directory that loads without peft.
"""

from __future__ import annotations

from torch import nn

from slmkit.errors import InputError
from slmkit.finetune.config import LORA_MODULES, LoraFinetuneConfig

HEADS = ("classifier", "score")  # sequence-classification heads: trained whole, never adapted


def linear_names(model: nn.Module) -> list[str]:
    """The distinct last names of the model's linear layers (what LoRA's target_modules match)."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})


def target_modules(model: nn.Module, cfg: LoraFinetuneConfig) -> list[str]:
    """The configured targets, or the architecture's projections; every one must be a linear layer here."""
    found = set(linear_names(model)) - set(HEADS) - {"lm_head"}
    model_type = getattr(model.config, "model_type", "?")
    wanted = cfg.target_modules or [m for m in LORA_MODULES.get(model_type, ()) if m in found]
    missing = [m for m in wanted if m not in found]
    if missing or not wanted:
        what = f"LoRA target module(s) {missing} are not linear layers of this {model_type} model" if missing else \
            f"no default LoRA targets for a {model_type} model"
        raise InputError(f"finetune: {what}; its linear layers are {sorted(found)} (set `target_modules`)")
    return wanted


def apply(model: nn.Module, cfg: LoraFinetuneConfig):
    """Adapters on ``model`` (in place; the base weights frozen, a classification head trained whole).

    Returns the peft wrapper, which :func:`merge` turns back into the plain model.
    """
    from peft import LoraConfig, get_peft_model

    heads = [h for h in HEADS if isinstance(getattr(model, h, None), nn.Module)]
    spec = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=target_modules(model, cfg), layers_to_transform=cfg.layers,
                      modules_to_save=heads or None, bias="none")
    try:
        return get_peft_model(model, spec)
    except ValueError as e:  # e.g. layer indices the model does not have
        raise InputError(f"finetune: LoRA cannot be applied: {e}") from None


def trainable(wrapped) -> nn.Module:
    """The model the training loops run: the original model object, adapters injected."""
    return wrapped.base_model.model


def merge(wrapped) -> nn.Module:
    """The adapters folded into the weights: a plain transformers model, no peft layers left."""
    return wrapped.merge_and_unload()
