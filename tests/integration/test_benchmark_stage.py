"""The benchmark stage end to end on tiny models: teacher, an HF student, its ONNX GenAI export and a
broken artifact; real PyTorch and onnxruntime-genai, report files, gates, re-render and compare."""

import importlib.util
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from benchmark_helpers import build_onnx, chat_examples, save_hf, smol_tokenizer, tiny_llama

from slmkit.benchmark.compare import compare
from slmkit.benchmark.config import BenchmarkConfig, SpeedConfig
from slmkit.benchmark.gates import failure_lines
from slmkit.benchmark.report import render_report
from slmkit.benchmark.speed import measure_backend, measure_isolated
from slmkit.benchmark.stage import run
from slmkit.runtimes import Variant

LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


class PipelineStandIn:
    """The few context members the stage uses; dataset_artifact caches by key like the store does."""

    def __init__(self, root: Path, teacher: Path, artifacts: list[dict], config: BenchmarkConfig, examples):
        self.stage = SimpleNamespace(name="benchmark", kind="benchmark", config=config)
        self.recipe = SimpleNamespace(name="tiny", seed=0, predictive=None, data=SimpleNamespace(train=True))
        self.teacher_dir, self.out_dir, self.work_dir = teacher, root / "out", root / "work"
        self.recipe_dir = root
        self.out_dir.mkdir()
        self.extras = {"artifacts": artifacts}
        self.reporter = SimpleNamespace(info=lambda msg: None, warn=lambda msg: None)
        self._examples, self._datasets, self.builds = examples, root / "datasets", 0

    def examples(self, split, tokenizer, max_length=None):
        assert split in ("eval", "train")  # train: what the unigram perplexity baseline is fitted on
        return self._examples

    def dataset_artifact(self, kind, key, build):
        d = self._datasets / kind / json.dumps(key, sort_keys=True).__hash__().__str__()
        if not d.exists():
            d.mkdir(parents=True)
            build(d)
            self.builds += 1
        return d


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_models")
    tok = smol_tokenizer()
    teacher = save_hf(tiny_llama(tok, layers=3, seed=0, init_range=0.2), tok, root / "teacher")
    student = save_hf(tiny_llama(tok, layers=2, seed=1, init_range=0.2), tok, root / "distill_v1")
    (student / "layer_importance.png").write_bytes(_tiny_png())
    build_onnx(student, root / "export_v1" / "onnx")
    (root / "export_v1" / "model-q4.gguf").write_bytes(
        b"GGUF placeholder: llama-cpp-python is not installed here"
    )
    broken = root / "quantize_v1"
    broken.mkdir()
    (broken / "config.json").write_text((student / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    return SimpleNamespace(
        tok=tok, teacher=teacher, student=student, export=root / "export_v1", broken=broken
    )


def _tiny_png() -> bytes:
    import io

    from matplotlib.figure import Figure

    buf = io.BytesIO()
    Figure(figsize=(1, 1)).savefig(buf, format="png")
    return buf.getvalue()


def _speed(**kw) -> dict:
    base = dict(
        backends=["torch_fp32", "onnxruntime_genai", "llama_cpp", "vllm"],
        batch_sizes=[1, 10**6],
        prompt_tokens=8,
        new_tokens=4,
        warmup=1,
        repeats=2,
        concurrency=2,
        isolate=False,
    )
    return {**base, **kw}


def test_stage_writes_report_and_hands_back_failed_gates(models, tmp_path):
    cfg = BenchmarkConfig(
        eval_samples=4,
        max_new_tokens=4,
        eval_batch_size=2,
        speed=_speed(),
        gates={"quality_retained": ">=1.5", "size_ratio": "<=10"},
    )
    artifacts = [
        {"id": "distill/v1", "stage": "distill", "kind": "distill", "path": models.student, "manifest": {}},
        {"id": "quantize/v1", "stage": "quantize", "kind": "quantize", "path": models.broken, "manifest": {}},
        {"id": "export/v1", "stage": "export", "kind": "export", "path": models.export, "manifest": {}},
    ]
    ctx = PipelineStandIn(tmp_path, models.teacher, artifacts, cfg, chat_examples(models.tok))
    output = run(ctx)  # a missed gate is data: the pipeline decides the exit code after committing
    assert output.artifact_type == "report"
    verdicts = {g["figure"]: g for g in output.details["gates"]}
    assert not verdicts["quality_retained"]["passed"] and verdicts["size_ratio"]["passed"]
    lines = failure_lines(output.details["gates"])
    assert len(lines) == 1 and re.search(r"quality_retained = [\d.]+, needs >=1.5 \(missed by [\d.]+\)", lines[0])

    r = json.loads((ctx.out_dir / "results.json").read_text())
    assert set(r["headline"]) >= {"quality_retained", "decode_speedup", "size_ratio", "params_ratio"}
    assert r["final_model"] == "export/v1" and r["headline"]["variant_format"] == "onnx"
    assert 0 < r["headline"]["size_ratio"] < 1 and r["headline"]["decode_speedup"] > 0
    rows = {(e["model"], e["backend"]): e for e in r["speed"]}
    assert ("teacher", "llama_cpp") not in rows  # an HF checkpoint is not a llama.cpp input
    gguf = rows[("export/v1", "llama_cpp")]
    if LLAMA_CPP:  # the placeholder file is then read by llama.cpp, which refuses it
        assert gguf["status"] == "failed" and gguf["reason"], gguf
    else:
        assert gguf["status"] == "skipped" and "llama-cpp-python is not installed" in gguf["reason"]
    assert rows[("teacher", "vllm")]["status"] == "skipped" and "vLLM" in rows[("teacher", "vllm")]["reason"]
    assert rows[("export/v1", "onnxruntime_genai")]["status"] == "ok"
    huge = rows[("teacher", "torch_fp32")]["batches"][1]
    assert huge["status"] == "skipped" and "does not fit in memory" in huge["reason"]
    assert rows[("teacher", "torch_fp32")]["batches"][0]["status"] == "ok"  # the rest is still measured
    broken = rows[("quantize/v1", "torch_fp32")]
    assert broken["status"] == "failed" and "could not load" in broken["reason"]
    teacher_q = r["models"][0]["variants"][0]["quality"]
    assert teacher_q["top1_agreement"] == 1.0 and teacher_q["teacher_kl"] == 0.0
    export = next(m for m in r["models"] if m["id"] == "export/v1")["variants"]
    onnx_q = next(v for v in export if v["format"] == "onnx")
    gguf_q = next(v for v in export if v["format"] == "gguf")
    if not LLAMA_CPP:
        assert "llama-cpp-python is not installed" in gguf_q["quality_skipped"]["perplexity"]
    assert onnx_q["quality_backend"] == "onnxruntime_genai" and onnx_q["quality"]["perplexity"] > 1

    # every figure with per-example values has a 95% interval around it; the teacher's retention is 1
    teacher_v = r["models"][0]["variants"][0]
    for v in (teacher_v, onnx_q):
        for figure in ("perplexity", "top1_agreement", "rouge_l", "answer_likelihood", "general_perplexity"):
            lo, hi = v["quality_ci"][figure]
            assert lo <= v["quality"][figure] <= hi, (figure, v["format"])
    assert teacher_v["quality"]["answer_likelihood"] == 1.0 and teacher_v["quality_ci"]["answer_likelihood"] == [1, 1]
    assert 0 <= onnx_q["quality"]["answer_likelihood"] <= 1
    assert teacher_v["retained_ci"]["perplexity"] == [1.0, 1.0]
    assert set(r["baselines"]) >= {"rouge_l", "answer_likelihood", "perplexity"}
    # the unigram model, fitted on these very targets here, beats a uniform guess over the vocabulary
    assert 1 < r["baselines"]["perplexity"]["value"] < len(models.tok)
    h = r["headline"]
    assert h["quality_retained_basis"] == "ratio" and h["quality_retained_ci"] is not None  # top1 has no baseline

    html = (ctx.out_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # pareto, size vs quality, layer importance
    assert "Layer importance (distill/v1)" in html
    assert ctx.builds == 1

    # re-render from results.json alone, and compare a run with itself
    before = (ctx.out_dir / "report.html").read_bytes()
    assert render_report(ctx.out_dir, tmp_path / "again").read_bytes() == before
    assert compare(ctx.out_dir, tmp_path / "again").row_count > 10


def test_speed_repeats_are_recorded_and_consistent_with_each_other(models):
    # not a timing comparison (machines are noisy): every repeat is kept, the summaries are
    # those of the kept runs, and each run's rates follow from its own prompt and TTFT
    cfg = SpeedConfig(**_speed(batch_sizes=[1], repeats=5, new_tokens=8, concurrency=0, threads=1))
    prompt = list(range(1000, 1008))
    a = measure_backend(Variant("teacher", "hf", models.teacher), "torch_fp32", prompt, cfg)["batches"][0]
    for key in ("decode_tok_s", "prefill_tok_s", "ttft_ms"):
        runs = a[key]["runs"]
        assert len(runs) == 5 and all(v > 0 for v in runs), key
        assert a[key]["min"] == min(runs) and a[key]["max"] == max(runs), key
        assert a[key]["median"] == sorted(runs)[2], key
    for tok_s, ttft_ms in zip(a["prefill_tok_s"]["runs"], a["ttft_ms"]["runs"]):
        assert tok_s * ttft_ms / 1000 == pytest.approx(len(prompt))  # batch 1: prompt tokens / TTFT
    assert a["latency_ms"]["p50"] <= a["latency_ms"]["p95"] <= a["latency_ms"]["p99"]


def test_isolated_measurement_reports_the_process_peak_rss(models, tmp_path):
    cfg = SpeedConfig(**_speed(batch_sizes=[1], repeats=2, concurrency=2, isolate=True))
    entry = measure_isolated(
        Variant("export/v1", "onnx", models.export / "onnx"),
        "onnxruntime_genai",
        list(range(1000, 1008)),
        cfg,
        tmp_path,
    )
    assert entry["status"] == "ok", entry.get("reason")
    # sampled in the child: ru_maxrss would carry the parent's high-water mark across fork+exec
    assert entry["rss_source"] == "sampled" and entry["peak_rss_mb"] > 10
    assert entry["concurrency"]["status"] == "ok" and entry["concurrency"]["throughput_tok_s"]["median"] > 0
