"""The export stage: write HF, ONNX GenAI and GGUF from one input model, verifying each.

Artifact layout: ``hf/``, ``onnx/``, ``gguf/model-<TYPE>.gguf``. Any verification failure (in
``mode: error``) raises, so the pipeline commits nothing.
"""

from __future__ import annotations

from pathlib import Path

from slmkit.context import StageContext, StageOutput
from slmkit.errors import InputError
from slmkit.export.config import ExportConfig
from slmkit.quantize.files import path_size
from slmkit.quantize.onnx_genai import builder_cache
from slmkit.quantize.stage import calibrator
from slmkit.runtimes import llama_cpp, onnx_genai, pytorch
from slmkit.runtimes.verify import Verifier


def write_hf(model_dir: Path, out_dir: Path, cfg: ExportConfig, verifier: Verifier) -> dict:
    from slmkit.export.hf import export_hf

    details = export_hf(model_dir, out_dir / "hf")
    return {**details, "path": "hf", "verification": verifier.check("hf", out_dir / "hf", "fp32")}


def write_onnx(model_dir: Path, out_dir: Path, cfg: ExportConfig, verifier: Verifier, cache: Path,
               calibration=None) -> dict:
    from slmkit.quantize.onnx_genai import build_onnx

    details = build_onnx(model_dir, out_dir / "onnx", cfg.onnx, cache, calibration)
    size = path_size(out_dir / "onnx")
    return {**details, "path": "onnx", "size_bytes": size,
            "verification": verifier.check("onnx", out_dir / "onnx", cfg.onnx.precision)}


def write_gguf_file(model_dir: Path, out_dir: Path, cfg: ExportConfig, verifier: Verifier, calibration=None) -> dict:
    from slmkit.quantize.gguf_writer import write_gguf

    path = out_dir / "gguf" / f"model-{cfg.gguf.type}.gguf"
    path.parent.mkdir(parents=True, exist_ok=True)
    details = write_gguf(model_dir, path, cfg.gguf, calibration)
    return {**details, "path": f"gguf/{path.name}", "size_bytes": path.stat().st_size,
            "verification": verifier.check("gguf", path, cfg.gguf.type)}


def export_all(model_dir: Path, out_dir: Path, cfg: ExportConfig, cache: Path, reporter=None,
               calibration=None) -> dict:
    """Write and verify every format of ``cfg.formats``; returns {format: details}.

    ``calibration`` (a ``slmkit.quantize.calibrate.Calibrator``) serves the formats that calibrate.
    """
    verifier = Verifier(model_dir, cfg.verify, reporter)
    written = {}
    for fmt in cfg.formats:
        if reporter is not None:
            reporter.info(f"export: writing {fmt}")
        if fmt == "hf":
            written["hf"] = write_hf(model_dir, out_dir, cfg, verifier)
        elif fmt == "onnx":
            written["onnx"] = write_onnx(model_dir, out_dir, cfg, verifier, cache, calibration)
        elif fmt == "gguf":
            written["gguf"] = write_gguf_file(model_dir, out_dir, cfg, verifier, calibration)
    return written


def notes(written: dict) -> list[str]:
    makers = {"hf": pytorch.card_notes, "onnx": onnx_genai.card_notes, "gguf": llama_cpp.card_notes}
    return [makers[fmt](d["path"]) for fmt, d in written.items()]


def run(ctx: StageContext) -> StageOutput:
    cfg: ExportConfig = ctx.stage.config
    if ctx.input_dir is None:
        raise InputError(f"stage {ctx.stage.name}: export needs an input model artifact")
    with builder_cache(ctx.work_dir) as cache:
        written = export_all(ctx.input_dir, ctx.out_dir, cfg, cache, ctx.reporter, calibrator(ctx))
    metrics = {}
    for fmt, d in written.items():
        metrics[f"{fmt}_top1_agreement"] = d["verification"]["top1_agreement"]
        metrics[f"{fmt}_max_abs_logit_diff"] = d["verification"]["max_abs_logit_diff"]
        metrics[f"{fmt}_size_bytes"] = d.get("size_bytes")
    return StageOutput(metrics=metrics, details={"formats": written}, artifact_type="model", model_card_notes=notes(written))
