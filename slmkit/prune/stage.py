"""The prune stage: calibrate -> select -> cut -> write a smaller dense HF model.

    slmkit prune recipe.yaml        # runs the recipe's prune stage(s)

Every bad target is rejected from config.json alone, before any weights load, so a wrong
recipe fails in a second with exit 2 and leaves no artifact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from slmkit.context import StageContext, StageOutput
from slmkit.errors import InputError
from slmkit.prune.methods import METHODS, plan  # noqa: F401  (plan: the pipeline's --dry-run entry)

PLOT_NAME = "layer_importance.png"


@dataclass
class PruneResult:
    metrics: dict
    details: dict
    layer_importance: list[float]
    removed_layers: list[int] = field(default_factory=list)


def run(ctx: StageContext) -> StageOutput:
    from transformers import AutoConfig

    from slmkit.models import load_model, load_tokenizer, save_model

    cfg = ctx.stage.config
    keep = METHODS[cfg.method].resolve(cfg, _checked_config(AutoConfig.from_pretrained(str(ctx.input_dir)), cfg.method))
    tokenizer = load_tokenizer(ctx.input_dir)
    calib = ctx.examples("calibration", tokenizer, max_length=cfg.calibration_max_length)
    evals = ctx.examples("eval", tokenizer, max_length=cfg.calibration_max_length) if cfg.eval_samples else []
    model = load_model(ctx.input_dir, device=str(ctx.device))
    result = prune_model(
        model,
        cfg,
        calib,
        evals[: cfg.eval_samples],
        tokenizer.pad_token_id,
        reporter=ctx.reporter,
        work_dir=ctx.work_dir,
        keep=keep,
    )
    save_model(model, tokenizer, ctx.out_dir)
    write_plot(result, ctx.out_dir, cfg.method)
    notes = [f"Pruned with `{cfg.method}`; layer importance: {PLOT_NAME}."]
    if cfg.method == "sparsity":
        from slmkit.prune.sparsity import NO_SPEEDUP

        notes.append(NO_SPEEDUP.capitalize() + ".")
    return StageOutput(metrics=result.metrics, details=result.details, model_card_notes=notes)


def _checked_config(model_config, method: str = "depth") -> dict:
    from slmkit.prune.archs import check_method
    from slmkit.prune.budget import config_dict

    cfg = config_dict(model_config)
    check_method(cfg, method)
    return cfg


def prune_model(
    model,
    cfg,
    calib: list,
    evals: list,
    pad_id: int,
    *,
    reporter,
    work_dir: Path | None = None,
    keep: int | None = None,
) -> PruneResult:
    """Prune ``model`` in place per ``cfg``; the library entry point behind the stage."""
    from slmkit.prune._eval import perplexity
    from slmkit.prune.budget import param_count

    method = METHODS[cfg.method]
    before_config = _checked_config(model.config, cfg.method)
    keep = method.resolve(cfg, before_config) if keep is None else keep
    calib = [e for e in calib if e.input_ids][: cfg.calibration_samples]
    if not calib:
        raise InputError(
            "prune: the calibration data is empty (data.calibration, or data.train as its fallback)"
        )
    ppl_before = perplexity(model, evals, pad_id, cfg.batch_size) if evals else None
    stats = _calibration_stats(
        model, cfg, calib, pad_id, method.needs(cfg, before_config, keep), reporter, work_dir
    )
    details = method.apply(model, stats, cfg, keep, work_dir=work_dir, reporter=reporter)
    if cfg.method == "sparsity":
        from slmkit.prune.sparsity import NO_SPEEDUP

        reporter.warn(NO_SPEEDUP)
    ppl_after = perplexity(model, evals, pad_id, cfg.batch_size) if evals else None
    influence = [round(float(x), 6) for x in stats.block_influence / stats.tokens]
    metrics = {
        "params_before": param_count(before_config),
        "params_after": param_count(model.config),
        "perplexity_before": ppl_before,
        "perplexity_after": ppl_after,
        "calibration_tokens": stats.tokens,
        "layer_importance": influence,
    }
    _report(reporter, metrics)
    return PruneResult(metrics, details, influence, details.get("removed_layers", []))


def _calibration_stats(model, cfg, calib, pad_id, needs, reporter, work_dir: Path | None):
    """Stream the calibration batches once; the sums are saved to work_dir so a rerun skips this."""
    import torch

    from slmkit.data import collate
    from slmkit.prune.calibration import Stats, calibrate

    cached = work_dir / "calibration_stats.pt" if work_dir is not None else None
    if cached is not None and cached.exists():
        reporter.info(f"prune: reusing calibration statistics from {cached}")
        return Stats(**torch.load(cached))
    batches = (collate(calib[i : i + cfg.batch_size], pad_id) for i in range(0, len(calib), cfg.batch_size))
    dtype = torch.bfloat16 if cfg.calibration_dtype == "bfloat16" else torch.float32
    with reporter.progress(len(calib), "prune: calibration") as bar:
        stats = calibrate(model, batches, needs, dtype=dtype, on_batch=bar.advance)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        torch.save(stats.to_dict(), tmp)
        tmp.replace(cached)  # atomic: a kill mid-write never leaves a truncated cache
    return stats


def _report(reporter, metrics: dict) -> None:
    before, after = metrics["params_before"]["total"], metrics["params_after"]["total"]
    line = f"prune: params {before:,} -> {after:,} ({after / before:.1%})"
    if metrics["perplexity_before"] is not None:
        line += f"; eval perplexity {metrics['perplexity_before']:.3f} -> {metrics['perplexity_after']:.3f}"
    reporter.info(line)


def write_plot(result: PruneResult, out_dir: Path, method: str) -> Path:
    from slmkit.prune.plot import plot_layer_importance

    return plot_layer_importance(
        result.layer_importance,
        result.removed_layers,
        Path(out_dir) / PLOT_NAME,
        f"layer importance ({method})",
    )
