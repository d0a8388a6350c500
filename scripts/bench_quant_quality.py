"""Quality of calibrated 4-bit weights on the embedded teacher: RTN vs GPTQ vs QuantEase, in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_quant_quality.py [--samples 128 --seq-len 512]

For ONNX int4 block 32 (onnxruntime-genai) with rtn, gptq and quantease (``--onnx``; rtn_lm8 and
quantease_lm8 keep the output head and the tied embedding in int8), and GGUF Q4_0 with rtn and
quantease (``--gguf``), each against the fp32 weights of SmolLM2-135M-Instruct:

- top1: the export verification's teacher-forced top-1 agreement (its fixed prompts + 16 greedy
  tokens), and top1_heldout: the same on the teacher's greedy answers to the 106 held-out prompts;
- ppl: perplexity of the reference answers of `builtin:heldout` (chat format, loss on the answer);
- tok_s: decode tokens/s in onnxruntime-genai (batch 1, median of 5 requests).

Calibration data: `builtin:prompts` (chat rows, concatenated and cut into blocks); how much the
calibration pass adds to the process's RSS at its peak is recorded (`calibration_rss_growth_mb`: run
with two --samples values to see it does not grow with them). Progress goes to stderr; the last line is one JSON object
with rtn_top1, gptq_top1, quantease_top1, fp32_ppl, rtn_ppl, gptq_ppl, quantease_ppl,
quantease_ppl_increase_ratio ((quantease_ppl - fp32_ppl) / (rtn_ppl - fp32_ppl)),
quantease_speed_ratio (quantease tok/s / rtn tok/s), and the same for GGUF with a gguf_ prefix.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def teacher_dir(cache: Path) -> Path:
    from slmkit.models import load_ref, save_model

    out = cache / "teacher-fp32"
    if not (out / "config.json").exists():
        model, tok = load_ref("builtin:smollm2-135m-instruct", "float32")
        save_model(model, tok, out)
    return out


def examples(name: str, tok, max_samples: int | None = None, max_length: int = 512):
    from slmkit.data import load_examples
    from slmkit.recipe import DataSpec

    spec = DataSpec(path=name, max_samples=max_samples, max_length=max_length)
    return load_examples(spec, tok, base_dir=ROOT)


def quality(lm, heldout, targets) -> dict:
    """Perplexity of the reference answers and top-1 agreement on the teacher's own answers."""
    from slmkit.benchmark.quality import agreement_metric, figure_value, perplexity_metric

    ppl = figure_value(perplexity_metric(heldout, lm)["perplexity"], "perplexity")
    top1 = figure_value(agreement_metric(targets, lm)["top1_agreement"]) if targets is not None else None
    return {"ppl": ppl, "top1_heldout": top1}


def decode_tok_s(onnx_dir: Path, prompt: list[int]) -> float:
    from slmkit.benchmark.config import SpeedConfig
    from slmkit.benchmark.speed import measure_backend
    from slmkit.runtimes import Variant

    cfg = SpeedConfig(backends=["onnxruntime_genai"], batch_sizes=[1], repeats=5, new_tokens=64, concurrency=0,
                      isolate=False)
    entry = measure_backend(Variant("q", "onnx", onnx_dir), "onnxruntime_genai", prompt, cfg)
    return entry["batches"][0]["decode_tok_s"]["median"]


def calibrator(cal_streams, work: Path, peaks: list):
    from slmkit.benchmark.speed import PeakRSS
    from slmkit.quantize.calibrate import Calibrator

    class Measured(Calibrator):
        def run(self, model_dir, targets, cfg, tag):
            self.streams()  # the data is read before the measurement: it is the same for any method
            with PeakRSS() as rss:
                before = rss.peak
                out = super().run(model_dir, targets, cfg, tag)
            peaks.append((rss.peak - before) / 2**20)  # what calibrating adds to the process
            return out

    return Measured(lambda: cal_streams, work, log)


def run_onnx(name: str, model: Path, out: Path, cal, args, verifier) -> dict:
    """``name``: a calibration method, with ``_lm8`` the output head (and a tied embedding) in int8."""
    from slmkit.quantize.config import OnnxOptions
    from slmkit.quantize.onnx_genai import build_onnx

    method = name.removesuffix("_lm8")
    cfg = {"method": method, "samples": args.samples, "seq_len": args.seq_len, "passes": args.passes}
    mixed = ["last_matmul:int8"] if name.endswith("_lm8") else []
    opts = OnnxOptions(precision="int4", block_size=32, calibration=cfg, mixed_precision=mixed)
    t0 = time.perf_counter()
    details = build_onnx(model, out, opts, out.parent / "builder-cache", cal)
    seconds = time.perf_counter() - t0
    check = verifier.check("onnx", out, "int4")
    return {"top1": check["top1_agreement"], "export_seconds": round(seconds, 1),
            "objective_vs_rtn": (details.get("calibration") or {}).get("mean_objective_vs_rtn")}


def run_gguf(method: str, model: Path, out: Path, cal, args, verifier) -> dict:
    from slmkit.quantize.config import GgufOptions
    from slmkit.quantize.gguf_writer import write_gguf

    cfg = {"method": method, "samples": args.samples, "seq_len": args.seq_len, "passes": args.passes}
    t0 = time.perf_counter()
    details = write_gguf(model, out, GgufOptions(type="Q4_0", calibration=cfg), cal)
    seconds = time.perf_counter() - t0
    check = verifier.check("gguf", out, "Q4_0")
    return {"top1": check["top1_agreement"], "runtime": check["runtime"], "export_seconds": round(seconds, 1),
            "objective_vs_rtn": (details.get("calibration") or {}).get("mean_objective_vs_rtn")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=128, help="calibration blocks")
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per calibration block")
    parser.add_argument("--passes", type=int, default=3, help="QuantEase passes")
    parser.add_argument("--onnx", default="rtn,rtn_lm8,gptq,quantease,quantease_lm8",
                        help="ONNX int4 rows: calibration methods, _lm8 with the output head in int8")
    parser.add_argument("--gguf", default="rtn,quantease", help="GGUF Q4_0 rows: calibration methods")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "slmkit-bench-quant")
    parser.add_argument("--memory-only", action="store_true",
                        help="only calibrate (gptq, ONNX int4 grids) and report the RSS it adds: run it with two "
                        "--samples values to see the peak does not grow with them")
    args = parser.parse_args()
    if args.memory_only:
        print(json.dumps(memory_only(args)))
        return
    import torch

    from slmkit.benchmark.quality import EvalSet, build_teacher_targets, greedy_answers
    from slmkit.models import load_tokenizer
    from slmkit.runtimes import Variant, load_lm
    from slmkit.runtimes.config import VerifyConfig
    from slmkit.runtimes.gguf_transformers import load_lm as gguf_lm
    from slmkit.runtimes.verify import Verifier

    torch.manual_seed(0)
    args.cache.mkdir(parents=True, exist_ok=True)
    model = teacher_dir(args.cache)
    tok = load_tokenizer(model)
    heldout = EvalSet(examples("builtin:heldout", tok), tok, 64, batch_size=8)
    cal_streams = [e.input_ids for e in examples("builtin:prompts", tok, max_length=1024)]
    fp32 = load_lm(Variant("teacher", "hf", model))
    log("fp32 teacher: answers to the held-out prompts, perplexity")
    prompts = [e.prompt_ids for e in heldout.examples]
    answers = greedy_answers(fp32, prompts, 64, 8)
    targets = EvalSet(heldout.examples, tok, 64, batch_size=8)
    targets.targets = build_teacher_targets(fp32, prompts, answers, args.cache / "teacher-logits", 8)
    out = {"fp32_ppl": quality(fp32, heldout, None)["ppl"]}
    verifier = Verifier(model, VerifyConfig(mode="warn", min_top1_quantized=0.0))
    speed_prompt = [t for p in prompts for t in p][:128]
    peaks: list[float] = []
    with tempfile.TemporaryDirectory(prefix="slmkit-bench-quant-") as tmp:
        tmp = Path(tmp)
        for method in filter(None, args.onnx.split(",")):
            log(f"onnx int4 block 32, {method}")
            d = tmp / f"onnx-{method}"
            r = run_onnx(method, model, d, calibrator(cal_streams, tmp / f"work-onnx-{method}", peaks), args, verifier)
            r.update(quality(load_lm(Variant("q", "onnx", d)), heldout, targets))
            r["tok_s"] = decode_tok_s(d, speed_prompt)
            out.update({f"{method}_{k}": v for k, v in r.items()})
            log(f"  {json.dumps(r)}")
        for method in filter(None, args.gguf.split(",")):
            log(f"gguf Q4_0, {method}")
            f = tmp / f"gguf-{method}" / "model-Q4_0.gguf"
            f.parent.mkdir()
            r = run_gguf(method, model, f, calibrator(cal_streams, tmp / f"work-gguf-{method}", peaks), args, verifier)
            r.update(quality(gguf_lm(Variant("q", "gguf", f)), heldout, targets))
            out.update({f"gguf_{method}_{k}": v for k, v in r.items()})
            log(f"  {json.dumps(r)}")
    out.update(summary(out, args, peaks))
    print(json.dumps(out))


def memory_only(args) -> dict:
    from slmkit.models import load_tokenizer
    from slmkit.quantize.config import CalibrationConfig
    from slmkit.quantize.grids import grid_for

    model = teacher_dir(args.cache)
    streams = [e.input_ids for e in examples("builtin:prompts", load_tokenizer(model), max_length=1024)]
    peaks: list[float] = []
    cfg = CalibrationConfig(method="gptq", samples=args.samples, seq_len=args.seq_len)
    with tempfile.TemporaryDirectory(prefix="slmkit-bench-quant-") as tmp:
        from slmkit.models import load_model

        names = [n for n, m in load_model(model).named_modules() if type(m).__name__ == "Linear"]
        targets = dict.fromkeys(names, grid_for("onnx", 4, 32))
        started = time.perf_counter()
        _, summary = calibrator(streams, Path(tmp), peaks).run(model, targets, cfg, "mem")
    return {"calibration_samples": args.samples, "calibration_seq_len": args.seq_len,
            "calibration_tokens": summary["tokens"], "calibration_seconds": round(time.perf_counter() - started, 1),
            "calibration_rss_growth_mb": round(peaks[0], 1)}


def summary(out: dict, args, peaks: list[float]) -> dict:
    def increase(prefix: str) -> float | None:
        rtn, q = out.get(f"{prefix}rtn_ppl"), out.get(f"{prefix}quantease_ppl")
        return None if rtn in (None, out["fp32_ppl"]) or q is None else (q - out["fp32_ppl"]) / (rtn - out["fp32_ppl"])

    return {"quantease_ppl_increase_ratio": increase(""), "gguf_quantease_ppl_increase_ratio": increase("gguf_"),
            "quantease_speed_ratio": out["quantease_tok_s"] / out["rtn_tok_s"] if "quantease_tok_s" in out else None,
            "calibration_samples": args.samples, "calibration_seq_len": args.seq_len,
            "calibration_rss_growth_mb": round(max(peaks), 1) if peaks else None}


if __name__ == "__main__":
    main()
