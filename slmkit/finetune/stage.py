"""The fine-tune stage of generation recipes: cross-entropy on data.train's responses, full or LoRA.

``run(ctx)`` trains the input model (by default the teacher) with the distillation loop
(``slmkit.distill.trainer``: Accelerate, bf16 autocast, checkpoints in the work dir, resume,
seeded data order) with no teacher and only the cross-entropy term, then writes the model,
LoRA adapters merged. Ranking / classification recipes fine-tune through
``slmkit.tasks.stage.finetune``, which shares :func:`adapt` and :func:`unwrap`.
"""

from __future__ import annotations

import shutil

import torch

from slmkit.context import StageContext, StageOutput
from slmkit.errors import InputError
from slmkit.finetune.config import LoraFinetuneConfig


def adapt(model, cfg, seed: int):
    """(the model to train, the peft wrapper or None): LoRA adapters on ``model`` for ``method: lora``."""
    if not isinstance(cfg, LoraFinetuneConfig):
        return model, None
    from slmkit.finetune import lora

    torch.manual_seed(seed)  # the adapters' random init
    wrapped = lora.apply(model, cfg)
    return lora.trainable(wrapped), wrapped


def unwrap(model, wrapped):
    """The model to save: adapters merged into the weights (a plain transformers model)."""
    if wrapped is None:
        return model
    from slmkit.finetune import lora

    return lora.merge(wrapped)


def describe(cfg) -> str:
    how = f"LoRA r={cfg.r}, alpha={cfg.alpha:g}, merged" if isinstance(cfg, LoraFinetuneConfig) else "all weights"
    return f"Fine-tuned on data.train for {cfg.max_steps} steps ({how})."


def trainer_config(cfg):
    """The distillation loop's settings for cross-entropy alone: no teacher term, no compiled layers."""
    from slmkit.distill.config import DistillConfig, LossConfig, OptimizerConfig

    return DistillConfig(
        loss=LossConfig(kd_weight=0.0, ce_weight=1.0), max_steps=cfg.max_steps, batch_size=cfg.batch_size,
        max_length=cfg.max_length, precision="bf16" if cfg.bf16 else "fp32", compile_layers=False,
        checkpoint_every=cfg.checkpoint_every, eval_every=cfg.max_steps,
        optimizer=OptimizerConfig(lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps),
    )


def run(ctx: StageContext) -> StageOutput:
    """Supervised fine-tuning of a causal LM on the responses of data.train."""
    from slmkit.distill.stage import apply_token_mode, check_trainable
    from slmkit.distill.trainer import DistillJob, train
    from slmkit.models import load_model, load_tokenizer, save_model

    cfg = ctx.stage.config
    if ctx.input_dir is None:
        raise InputError("finetune: no input model")
    tok = load_tokenizer(ctx.input_dir)
    train_ex = apply_token_mode(ctx.examples("train", tok, cfg.max_length), "auto", "data.train")
    eval_ex = []
    if ctx.recipe.data.eval is not None:
        eval_ex = apply_token_mode(ctx.examples("eval", tok, cfg.max_length), "auto", "data.eval")[:64]
    model = load_model(ctx.input_dir, "float32", "cpu")  # fp32 master weights
    check_trainable(model, f"the model at {ctx.input_dir}")
    model, wrapped = adapt(model, cfg, ctx.recipe.seed)
    job = DistillJob(model, None, train_ex, eval_ex, tok.pad_token_id, model.get_output_embeddings().weight.shape[0],
                     trainer_config(cfg), ctx.work_dir or ctx.out_dir.parent / f".{ctx.out_dir.name}-work",
                     ctx.recipe.seed, reporter=ctx.reporter, cpu=ctx.device.type == "cpu")
    result = train(job)
    save_model(unwrap(job.student, wrapped), tok, ctx.out_dir)
    shutil.copy(result.history_path, ctx.out_dir / "metrics.jsonl")
    final = {k: v for k, v in result.final.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    details = {"method": cfg.method, "train_examples": len(train_ex), "steps": result.steps,
               "resumed_from": result.resumed_from, "train_seconds": round(result.extra["train_seconds"], 2)}
    return StageOutput(metrics=final, details=details, model_card_notes=[describe(cfg)])
