"""The quantize stage: one backend per ``method``, each output verified in its runtime.

Artifact layout: ``onnx/`` (onnxruntime-genai directory) for method onnx, ``gguf/model-<TYPE>.gguf``
for method gguf, an HF directory at the artifact root for torchao and llmcompressor.
"""

from __future__ import annotations

from pathlib import Path

from slmkit.context import StageContext, StageOutput
from slmkit.errors import InputError
from slmkit.quantize.files import path_size, weights_size
from slmkit.runtimes import llama_cpp, onnx_genai, pytorch
from slmkit.runtimes.verify import Verifier


def calibrator(ctx: StageContext):
    """The stage's calibration data (read only if a writer calibrates) and where calibration resumes from."""
    from slmkit.quantize.calibrate import Calibrator

    def streams() -> list[list[int]]:
        from slmkit.models import load_tokenizer

        return [e.input_ids for e in ctx.examples("calibration", load_tokenizer(ctx.input_dir))]

    work = Path(ctx.work_dir) if ctx.work_dir else ctx.out_dir.parent / f".{ctx.out_dir.name}-calibrate"
    return Calibrator(streams, work, ctx.reporter.info)


def _sizes(ctx: StageContext, written) -> dict:
    before, after = weights_size(ctx.input_dir), path_size(written)
    return {"size_before_bytes": before, "size_after_bytes": after, "compression": round(before / max(after, 1), 3)}


def _output(ctx, details: dict, verification: dict, written, artifact_type: str, notes: list[str]) -> StageOutput:
    details = {**details, **_sizes(ctx, written), "verification": verification}
    metrics = {
        "top1_agreement": verification["top1_agreement"], "max_abs_logit_diff": verification["max_abs_logit_diff"],
        "size_after_bytes": details["size_after_bytes"], "compression": details["compression"],
    }
    return StageOutput(metrics=metrics, details=details, artifact_type=artifact_type, model_card_notes=notes)


def quantize_onnx(ctx: StageContext, cfg) -> StageOutput:
    from slmkit.quantize.onnx_genai import build_onnx, builder_cache

    out = ctx.out_dir / "onnx"
    with builder_cache(ctx.work_dir) as cache:
        details = build_onnx(ctx.input_dir, out, cfg, cache, calibrator(ctx))
    result = Verifier(ctx.input_dir, cfg.verify, ctx.reporter).check("onnx", out, cfg.precision)
    return _output(ctx, {**details, "path": "onnx"}, result, out, "onnx", [onnx_genai.card_notes("onnx")])


def quantize_gguf(ctx: StageContext, cfg) -> StageOutput:
    from slmkit.quantize.gguf_writer import write_gguf

    out = ctx.out_dir / "gguf" / f"model-{cfg.type}.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    details = write_gguf(ctx.input_dir, out, cfg, calibrator(ctx))
    result = Verifier(ctx.input_dir, cfg.verify, ctx.reporter).check("gguf", out, cfg.type)
    rel = f"gguf/{out.name}"
    return _output(ctx, {**details, "path": rel}, result, out, "gguf", [llama_cpp.card_notes(rel)])


def quantize_torchao(ctx: StageContext, cfg) -> StageOutput:
    from slmkit.quantize.torchao import quantize_torchao as run_torchao

    details = run_torchao(ctx.input_dir, ctx.out_dir, cfg)
    result = Verifier(ctx.input_dir, cfg.verify, ctx.reporter).check("hf", ctx.out_dir, cfg.scheme)
    return _output(ctx, {**details, "path": "."}, result, ctx.out_dir, "model", [pytorch.card_notes(".")])


def quantize_llmcompressor(ctx: StageContext, cfg) -> StageOutput:
    from slmkit.quantize.llmcompressor import quantize_llmcompressor as run_llmc
    from slmkit.quantize.llmcompressor import require_llmcompressor

    require_llmcompressor()  # before reading calibration data: the missing extra is the first thing to fix
    calibration = None
    if cfg.scheme == "W4A16":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(ctx.input_dir)
        calibration = [e.input_ids for e in ctx.examples("calibration", tokenizer, max_length=cfg.max_seq_length)]
    details = run_llmc(ctx.input_dir, ctx.out_dir, cfg, calibration)
    result = Verifier(ctx.input_dir, cfg.verify, ctx.reporter).check("hf", ctx.out_dir, cfg.scheme)
    return _output(ctx, {**details, "path": "."}, result, ctx.out_dir, "model", [pytorch.card_notes(".")])


METHODS = {
    "onnx": quantize_onnx,
    "gguf": quantize_gguf,
    "torchao": quantize_torchao,
    "llmcompressor": quantize_llmcompressor,
}


def run(ctx: StageContext) -> StageOutput:
    cfg = ctx.stage.config
    if ctx.input_dir is None:
        raise InputError(f"stage {ctx.stage.name}: quantize needs an input model artifact")
    return METHODS[cfg.method](ctx, cfg)
