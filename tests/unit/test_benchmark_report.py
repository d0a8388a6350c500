"""Results math (ratios, headline), rendering and compare on a hand-made results document."""

import base64
import json
import re

import numpy as np
import pytest

from slmkit.benchmark.compare import compare, compare_rows
from slmkit.benchmark.report import pareto_front, render_report, rich_table, write_report
from slmkit.benchmark.results import SCHEMA_VERSION, add_ratios, gate_figures, headline, load_results
from slmkit.benchmark.speed import cpu_info, estimate_request_bytes, latency_percentiles, summarize
from slmkit.errors import InputError


def _batch(bs, decode, prefill, ttft, lat):
    return {
        "batch_size": bs,
        "status": "ok",
        "reason": None,
        "decode_tok_s": summarize(decode),
        "prefill_tok_s": summarize(prefill),
        "ttft_ms": summarize(ttft),
        "latency_ms": latency_percentiles(lat),
    }


def _entry(model, fmt, backend, decode, rss, size):
    return {
        "model": model,
        "format": fmt,
        "backend": backend,
        "status": "ok",
        "reason": None,
        "peak_rss_mb": rss,
        "size_bytes": size,
        "load_s": 0.5,
        "batches": [
            _batch(1, decode, [500, 510, 520], [20, 21, 22], [400, 410, 450]),
            {"batch_size": 64, "status": "skipped", "reason": "does not fit in memory: batch 64"},
        ],
        "concurrency": {
            "requests": 2,
            "status": "ok",
            "reason": None,
            "throughput_tok_s": summarize([d * 1.5 for d in decode]),
            "latency_ms": latency_percentiles([500, 520]),
        },
    }


def make_results():
    q = lambda agree, ppl: {"top1_agreement": agree, "teacher_kl": 1 - agree, "perplexity": ppl}
    r = {
        "schema_version": SCHEMA_VERSION,
        "recipe": "demo",
        "primary_metric": "top1_agreement",
        "primary_higher_is_better": True,
        "teacher": "teacher",
        "final_model": "export/v1",
        "hardware": {"cpu": cpu_info("model name : Test CPU\nflags : fpu avx2 amx_bf16 sse"), "gpu": None},
        "settings": {"speed": {"batch_sizes": [1, 64], "new_tokens": 16, "repeats": 3}},
        "models": [
            {
                "id": "teacher",
                "status": "ok",
                "variants": [
                    {
                        "format": "hf",
                        "size_bytes": 1000,
                        "params": 100,
                        "quality": q(1.0, 10.0),
                        "quality_retained": 1.0,
                    }
                ],
            },
            {
                "id": "distill/v1",
                "status": "ok",
                "variants": [
                    {
                        "format": "hf",
                        "size_bytes": 500,
                        "params": 50,
                        "quality": q(0.9, 12.0),
                        "quality_retained": 0.9,
                    }
                ],
            },
            {
                "id": "export/v1",
                "status": "ok",
                "variants": [
                    {
                        "format": "onnx",
                        "size_bytes": 125,
                        "params": 50,
                        "quality": q(0.85, 13.0),
                        "quality_retained": 0.85,
                    }
                ],
            },
            {
                "id": "prune/v1",
                "status": "failed",
                "reason": "artifact directory /x does not exist",
                "variants": [],
            },
        ],
        "speed": [
            _entry("teacher", "hf", "torch_fp32", [10, 11, 12], 800.0, 1000),
            _entry("teacher", "hf", "torch_bf16", [20, 21, 22], 500.0, 1000),
            {
                "model": "teacher",
                "format": "hf",
                "backend": "vllm",
                "status": "skipped",
                "reason": "vLLM is not installed",
                "batches": [],
            },
            _entry("distill/v1", "hf", "torch_fp32", [20, 22, 24], 400.0, 500),
            _entry("export/v1", "onnx", "onnxruntime_genai", [44, 45, 46], 200.0, 125),
        ],
        "gates": [],
    }
    add_ratios(r)
    r["headline"] = headline(r)
    return r


def test_summaries_match_numpy():
    s = summarize([3.0, 1.0, 2.0, 10.0])
    assert (s["median"], s["min"], s["max"]) == (2.5, 1.0, 10.0)
    p = latency_percentiles([1.0, 2.0, 3.0, 4.0, 100.0])
    assert p["p95"] == pytest.approx(np.percentile([1, 2, 3, 4, 100], 95)) and p["n"] == 5


def test_ratios_against_same_backend_and_fp32_baseline():
    r = make_results()
    distill = r["speed"][3]["batches"][0]["ratios"]
    assert distill["vs_teacher_baseline"]["decode_speedup"] == pytest.approx(22 / 11)
    assert r["speed"][3]["ratios"]["vs_teacher_baseline"]["memory_reduction"] == pytest.approx(2.0)
    onnx = r["speed"][4]
    assert onnx["ratios"]["vs_teacher_same_backend"] is None  # the teacher has no ONNX form
    assert onnx["batches"][0]["ratios"]["vs_teacher_baseline"]["decode_speedup"] == pytest.approx(45 / 11)
    assert onnx["batches"][1].get("ratios", {}).get("vs_teacher_baseline") is None  # skipped row


def test_headline_is_the_final_artifacts_fastest_variant_against_teacher_fp32():
    h = make_results()["headline"]
    assert h["model"] == "export/v1" and h["backend"] == "onnxruntime_genai"
    assert h["decode_speedup"] == pytest.approx(45 / 11)
    assert h["quality_retained"] == 0.85
    assert h["size_ratio"] == pytest.approx(0.125) and h["params_ratio"] == pytest.approx(0.5)
    figures = gate_figures(make_results())
    assert figures["perplexity"] == 13.0 and figures["decode_speedup"] == pytest.approx(45 / 11)


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(0)
    pts = [tuple(x) for x in rng.random((30, 2))]
    dominated = {
        i for i, (x, y) in enumerate(pts) if any(x2 <= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in pts)
    }
    assert set(pareto_front(pts)) == set(range(30)) - dominated


def test_memory_estimate_grows_with_batch():
    dims = {
        "layers": 30,
        "heads": 9,
        "kv_heads": 3,
        "head_dim": 64,
        "hidden": 576,
        "intermediate": 1536,
        "vocab": 49152,
        "dtype_bytes": 4,
    }
    one = estimate_request_bytes(dims, 1, 128, 64)
    assert estimate_request_bytes(dims, 8, 128, 64) == pytest.approx(8 * one, rel=1e-9)
    # the KV cache alone: 2 * layers * seq * kv_heads * head_dim * 4 bytes
    assert one > 2 * 30 * 192 * 3 * 64 * 4


def test_cpu_flags_are_parsed():
    info = cpu_info("model name\t: Test CPU\nflags\t\t: fpu avx2 amx_bf16 sse avx512f\n")
    assert info["model"] == "Test CPU" and info["flags"] == ["amx_bf16", "avx2", "avx512f"]


def test_report_files_are_self_contained(tmp_path):
    r = make_results()
    html_path = write_report(r, tmp_path)
    html = html_path.read_text()
    assert json.loads((tmp_path / "results.json").read_text())["headline"]["model"] == "export/v1"
    images = re.findall(r"src='data:image/png;base64,([^']+)'", html)
    assert len(images) == 2 and all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "http://" not in html and "https://" not in html  # nothing fetched when opened
    md = (tmp_path / "report.md").read_text()
    assert "does not fit in memory: batch 64" in md and "vLLM is not installed" in md
    assert "FAILED: artifact directory /x does not exist" in md
    assert (tmp_path / "pareto.png").read_bytes().startswith(b"\x89PNG")


def test_render_report_rerenders_identically_from_results_json(tmp_path):
    write_report(make_results(), tmp_path / "runs" / "demo" / "benchmark" / "v1")
    first = (tmp_path / "runs/demo/benchmark/v1/report.html").read_bytes()
    out = render_report(tmp_path / "runs" / "demo")  # a run dir: its newest benchmark artifact
    assert out.read_bytes() == first
    other = render_report(tmp_path / "runs/demo/benchmark/v1/results.json", tmp_path / "elsewhere")
    assert other.read_bytes() == first


def test_load_results_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(InputError, match="no results.json"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(InputError, match="schema_version"):
        load_results(tmp_path)


def test_compare_lines_up_matching_figures_and_tells_noise(tmp_path):
    a, b = make_results(), make_results()
    b["speed"][4]["batches"][0]["decode_tok_s"].update(median=90.0, min=85.0, max=95.0)
    final = lambda r: next(m for m in r["models"] if m["id"] == "export/v1")["variants"][0]  # noqa: E731
    ids = [f"q{i}" for i in range(60)]
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.3, 0.7, 60)
    final(a)["per_example"] = {"rouge_l": {"num": scores.tolist(), "den": [1.0] * 60, "ids": ids}}
    final(b)["per_example"] = {"rouge_l": {"num": (scores + 0.2).tolist(), "den": [1.0] * 60, "ids": ids}}
    final(a)["quality"]["rouge_l"], final(b)["quality"]["rouge_l"] = scores.mean(), scores.mean() + 0.2
    write_report(a, tmp_path / "a")
    write_report(b, tmp_path / "b")
    write_report(a, tmp_path / "a2")
    rows = {
        k: (va, vb, ratio, beyond)
        for k, va, vb, ratio, beyond in compare_rows(load_results(tmp_path / "a"), load_results(tmp_path / "b"))
    }
    speed = rows["export/v1 onnxruntime_genai b1 decode tok/s"]
    assert speed[:3] == (45.0, 90.0, 2.0) and speed[3] is True  # the timed ranges do not overlap
    assert rows["headline quality_retained"][:3] == (0.85, 0.85, 1.0)
    assert rows["export/v1 [onnx] rouge_l"][3] is True  # every prompt 0.2 better: paired bootstrap sees it
    same = {k: beyond for k, _, _, _, beyond in compare_rows(load_results(tmp_path / "a"),
                                                               load_results(tmp_path / "a2"))}
    assert same["export/v1 [onnx] rouge_l"] is False and same["export/v1 onnxruntime_genai b1 decode tok/s"] is False
    assert compare(tmp_path / "a", tmp_path / "b").row_count == len(rows)
    assert rich_table(a).row_count == 9  # 4 entries x (1 ok + 1 skipped batch) + 1 skipped backend
