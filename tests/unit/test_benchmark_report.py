"""Results math (ratios, headline), rendering and compare on hand-made results documents: a small
one, and a quickstart-sized one (teacher, prune, two distills, an ONNX and a GGUF export, llama.cpp
not installed) that the browser test renders too."""

import base64
import copy
import html as htmllib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from slmkit.benchmark import gates as gates_mod
from slmkit.benchmark import report as R
from slmkit.benchmark.compare import compare, compare_rows, write_compare
from slmkit.benchmark.report import pareto_front, render_report, rich_table, write_report
from slmkit.benchmark.results import (
    SCHEMA_VERSION,
    add_ratios,
    gate_figures,
    gate_reasons,
    headline,
    load_results,
)
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
                "reason": "vLLM is not installed (pip install 'slmkit[gpu]')",
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
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 2 and all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "http://" not in html and "https://" not in html  # nothing fetched when opened
    md = (tmp_path / "report.md").read_text()
    assert "does not fit in memory: batch 64" in md and "vLLM is not installed" in md
    assert "✘ FAILED: artifact directory /x does not exist" in md
    assert "vLLM is not installed [1]" in md and md.count("pip install 'slmkit[gpu]'") == 1
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
    final = lambda r: next(m for m in r["models"] if m["id"] == "export/v1")["variants"][0]
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


# ---------------------------------------------------------------- a quickstart-sized document

LLAMA_HINT = "llama-cpp-python is not installed (pip install 'slmkit[llamacpp]')"
QS_METRICS = ("perplexity", "teacher_agreement", "task", "answer_likelihood", "general_perplexity")
# figure -> (higher is better, the teacher's value and 95% interval)
QS_TEACHER = {"answer_likelihood": (True, 1.0, 1.0, 1.0), "rouge_l": (True, 0.171, 0.142, 0.2),
              "top1_agreement": (True, 1.0, 1.0, 1.0), "teacher_kl": (False, 0.0, 0.0, 0.0),
              "perplexity": (False, 9.8, 9.1, 10.6), "general_perplexity": (False, 24.1, 22.0, 26.3)}
QS_BASELINES = {"answer_likelihood": (0.31, 0.27, 0.35, "the first sentence of the question, judged by the teacher"),
                "rouge_l": (0.081, 0.062, 0.1, "the first sentence of the question, given as the answer"),
                "perplexity": (310.0, 290.0, 333.0, "a unigram model fitted on the training targets")}


def _qs_variant(fmt, params, size, figures, backend):
    """A variant with figures given as {figure: (value, low, high)}; ratios and above-baseline values
    computed the way the benchmark defines them (teacher / model for lower-is-better figures)."""
    v = {"format": fmt, "path": f"/runs/quickstart/x/{fmt}", "size_bytes": size, "params": params,
         "quality_backend": backend, "quality": {}, "quality_ci": {}, "quality_skipped": {}, "retained": {},
         "retained_ci": {}, "above_baseline": {}, "above_baseline_ci": {}}
    for f, (value, lo, hi) in figures.items():
        up, t, _, _ = QS_TEACHER[f]
        v["quality"][f], v["quality_ci"][f] = value, [lo, hi]
        if f != "teacher_kl":
            v["retained"][f] = value / t if up else t / value
            v["retained_ci"][f] = [lo / t, hi / t] if up else [t / hi, t / lo]
        if f in QS_BASELINES:
            b = QS_BASELINES[f][0]
            v["above_baseline"][f] = (value - b) / (t - b)
            v["above_baseline_ci"][f] = sorted([(lo - b) / (t - b), (hi - b) / (t - b)])
    v["quality_retained"] = v["above_baseline"]["answer_likelihood"]
    v["quality_retained_plain"] = v["retained"]["answer_likelihood"]
    return v


def _student(al, rouge, agree, kl, ppl, gppl):
    """Figures of a student from its centre values; intervals about as wide as 48 prompts give."""
    w = lambda x, frac: (x, x * (1 - frac), x * (1 + frac))
    return {"answer_likelihood": (al, al - 0.022, al + 0.02), "rouge_l": w(rouge, 0.18),
            "top1_agreement": w(agree, 0.03), "teacher_kl": w(kl, 0.08), "perplexity": w(ppl, 0.07),
            "general_perplexity": w(gppl, 0.08)}


def _qs_speed(model, fmt, backend, decode, size, rss, load_s):
    lat = [1000 * (1 + 63 / d) / 1.0 for d in decode]  # prefill ~1 s, then 63 decode steps
    return {"model": model, "format": fmt, "backend": backend, "path": f"/runs/quickstart/{model}",
            "status": "ok", "reason": None, "device": "cpu", "threads": 2, "load_s": load_s,
            "size_bytes": size, "rss_before_load_mb": 310.0, "peak_rss_mb": rss, "rss_source": "ru_maxrss",
            "gpu_peak_mb": 0.0,
            "batches": [_batch(1, decode, [d * 6.1 for d in decode], [1000 / d * 21 for d in decode], lat)]}


def quickstart_results(llama_cpp: bool = False) -> dict:
    """What `slmkit run recipes/quickstart.yaml` reports on a 2-core CPU, without llama-cpp-python unless
    ``llama_cpp`` (then the GGUF export is measured too: six points on the plots)."""
    teacher_params, student_params = 134515008, 85484160
    t_figs = {f: (v, lo, hi) for f, (_, v, lo, hi) in QS_TEACHER.items()}
    onnx = _qs_variant("onnx", 113795712, 77_000_000, _student(0.937, 0.152, 0.71, 0.93, 12.9, 31.0),
                       "onnxruntime_genai")
    gguf = {"format": "gguf", "path": "/runs/quickstart/export/v1/gguf/model-Q4_0.gguf", "size_bytes": 58_700_000,
            "params": student_params, "quality_backend": "llama_cpp",
            "quality": dict.fromkeys(QS_TEACHER), "quality_skipped": dict.fromkeys(QS_METRICS, LLAMA_HINT)}
    if llama_cpp:
        gguf = {**_qs_variant("gguf", student_params, 58_700_000, _student(0.925, 0.15, 0.69, 0.98, 13.2, 31.5),
                              "llama_cpp"), "path": gguf["path"]}
    models = [("teacher", "teacher", [_qs_variant("hf", teacher_params, 538060032, t_figs, "torch_fp32")]),
              ("prune/v1", "prune", [_qs_variant("hf", student_params, 341936640,
                                                 _student(0.52, 0.061, 0.48, 2.9, 48.0, 120.0), "torch_fp32")]),
              ("seqkd/v1", "distill", [_qs_variant("hf", student_params, 341936640,
                                                   _student(0.91, 0.149, 0.79, 0.71, 11.8, 29.5), "torch_fp32")]),
              ("onpolicy/v1", "distill", [_qs_variant("hf", student_params, 341936640,
                                                      _student(0.94, 0.155, 0.83, 0.6, 11.5, 29.9), "torch_fp32")]),
              ("export/v1", "export", [onnx, gguf])]
    r = {
        "schema_version": SCHEMA_VERSION, "created_at": "2026-03-02T10:15:00+00:00", "recipe": "quickstart",
        "primary_metric": "answer_likelihood", "primary_higher_is_better": True, "teacher": "teacher",
        "final_model": "export/v1", "eval_examples": 48, "speed_prompt_tokens": 128,
        "settings": {"quality": list(QS_METRICS), "primary_metric": "answer_likelihood",
                     "speed": {"backends": ["torch_fp32", "onnxruntime_genai", "llama_cpp"], "batch_sizes": [1],
                               "prompt_tokens": 128, "new_tokens": 64, "warmup": 1, "repeats": 3, "concurrency": 0}},
        "hardware": {"cpu": {**cpu_info("model name : AMD EPYC 9R14\nflags : fpu avx2 avx512f amx_bf16"),
                             "logical_cores": 2, "physical_cores": 2, "memory_gb": 7.6},
                     "gpu": None, "os": "Linux-6.1", "torch_threads": 2,
                     "libraries": {"python": "3.11.7", "torch": "2.13.0", "onnxruntime-genai": "0.18.0",
                                   "llama-cpp-python": None}},
        "models": [{"id": i, "role": "teacher" if i == "teacher" else "artifact", "stage": None if i == "teacher"
                    else i.split("/")[0], "kind": kind, "path": f"/runs/quickstart/{i}", "status": "ok",
                    "reason": None, "layer_importance_png": None, "variants": vs} for i, kind, vs in models],
        "baselines": {f: {"value": v, "ci": [lo, hi], "what": what} for f, (v, lo, hi, what) in QS_BASELINES.items()},
        "speed": [
            _qs_speed("teacher", "hf", "torch_fp32", [19.5, 20.0, 20.6], 538060032, 1130.0, 1.9),
            _qs_speed("prune/v1", "hf", "torch_fp32", [30.8, 31.5, 32.0], 341936640, 880.0, 1.3),
            _qs_speed("seqkd/v1", "hf", "torch_fp32", [30.9, 31.4, 31.9], 341936640, 879.0, 1.3),
            _qs_speed("onpolicy/v1", "hf", "torch_fp32", [31.0, 31.6, 32.2], 341936640, 881.0, 1.3),
            _qs_speed("export/v1", "onnx", "onnxruntime_genai", [84.0, 85.1, 86.0], 77_000_000, 520.0, 0.4),
            _qs_speed("export/v1", "gguf", "llama_cpp", [96.0, 97.5, 99.0], 58_700_000, 330.0, 0.2) if llama_cpp else
            {"model": "export/v1", "format": "gguf", "backend": "llama_cpp", "path": gguf["path"],
             "status": "skipped", "reason": LLAMA_HINT, "batches": []},
        ],
    }
    add_ratios(r)
    r["headline"] = headline(r)
    return _with_gates(r, {"quality_retained": ">=0.85", "quality_retained_low": ">=0.8", "decode_speedup": ">=5"})


def _with_gates(r: dict, specs: dict) -> dict:
    gates = [gates_mod.parse_gate(k, v) for k, v in specs.items()]
    r["gates"] = gates_mod.evaluate_gates(gates, gate_figures(r), gate_reasons(r))
    r["gates_passed"] = all(g["passed"] for g in r["gates"])
    return r


def teacher_cannot_results() -> dict:
    """The quickstart document where the teacher's own interval reaches down to the baseline."""
    r = quickstart_results()
    r["baselines"]["answer_likelihood"].update(value=0.98, ci=[0.97, 0.99])
    r["models"][0]["variants"][0]["quality_ci"]["answer_likelihood"] = [0.96, 1.0]
    r["headline"] = headline(r)
    return _with_gates(r, {"quality_retained": ">=0.85", "decode_speedup": ">=4"})


def scoring_results() -> dict:
    """A ranking benchmark's document: scoring speed instead of decode speed; the export's int8 variant
    without intervals (older scoring results have none: they render as plain values)."""
    q = lambda ndcg, auc: {"ndcg@5": ndcg, "auc": auc, "mrr": ndcg - 0.05}
    teacher = {"format": "hf", "size_bytes": 13179120, "params": 3293760, "quality_backend": "torch",
               "quality": q(0.877, 0.815), "quality_ci": {"ndcg@5": [0.80, 0.94]}, "quality_retained": 1.0}
    student = {"format": "hf", "size_bytes": 3964916, "params": 990561, "quality_backend": "torch",
               "quality": q(0.84, 0.79), "quality_ci": {"ndcg@5": [0.76, 0.91]},
               "above_baseline": {"ndcg@5": 0.84}, "above_baseline_ci": {"ndcg@5": [0.7, 0.95]},
               "quality_retained": 0.84, "notes": ["1 eval group has a single candidate"]}
    int8 = {"format": "onnx_int8", "size_bytes": 1100000, "params": 990561, "quality_backend": "onnxruntime",
            "quality": q(0.83, 0.78), "quality_retained": 0.81}
    speed = lambda m, fmt, b, items, lat: {"model": m, "format": fmt, "backend": b, "status": "ok",
                                           "items_per_s@bs4": items / 2, "items_per_s@20_per_context": items,
                                           "context_latency_p50_ms": lat, "context_latency_p99_ms": lat * 1.2}
    return {
        "schema_version": SCHEMA_VERSION, "recipe": "rank", "task": "ranking", "primary_metric": "ndcg@5",
        "primary_higher_is_better": True, "teacher": "teacher", "final_model": "rank/export/v1", "eval_examples": 12,
        "settings": {"speed": {"batch_sizes": [4]}}, "hardware": {"cpu": {"model": "Test CPU"}, "gpu": None},
        "models": [{"id": "teacher", "status": "ok", "variants": [teacher]},
                   {"id": "rank/export/v1", "status": "ok", "variants": [student, int8]}],
        "speed": [], "baselines": {"ndcg@5": {"value": 0.64, "ci": [0.64, 0.64], "what": "a random order"}},
        "scoring_speed": [speed("teacher", "hf", "torch", 1007.0, 20.4),
                          speed("rank/export/v1", "hf", "torch", 1752.9, 11.7),
                          speed("rank/export/v1", "onnx_int8", "onnxruntime:scorer.int8.onnx", 2410.0, 8.3)],
        "headline": {"model": "rank/export/v1", "variant_format": "onnx_int8", "backend": "onnxruntime:scorer.int8.onnx",
                     "quality_retained": 0.81, "scoring_speedup": 2.393, "size_ratio": 0.0835, "params_ratio": 0.3007},
        "gates": [],
    }


# ---------------------------------------------------------------- reading the report


def _text(markup: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed."""
    return re.sub(r"\s+", " ", htmllib.unescape(re.sub(r"<[^>]+>", "", markup))).strip()


def test_numbers_are_formatted_for_people():
    assert R.fmt_count(134515008) == "134.5M" and R.fmt_count(990561) == "990.6K" and R.fmt_count(1.7e9) == "1.7B"
    assert R.fmt_ratio(4.255) == "4.3x" and R.fmt_ratio(0.6355) == "0.64x" and R.fmt_ratio(12.34) == "12x"
    assert R.fmt_fraction(0.6355) == "1/1.6" and R.fmt_fraction(0.1431) == "1/7" and R.fmt_fraction(0.08) == "1/12"
    assert R.fmt_bytes(538060032) == "538 MB" and R.fmt_bytes(1.234e9) == "1.23 GB" and R.fmt_bytes(77e6) == "77 MB"
    assert R.fmt_bytes(13179120) == "13.2 MB" and R.fmt_bytes(125) == "125 B" and R.fmt_mb(1130.0) == "1.13 GB"
    assert R.sig(0.87697) == "0.877" and R.sig(12345.0) == "12,300" and R.sig(9.996) == "10" and R.sig(-72.06) == "-72.1"
    assert R.sig(0.0) == "0" and R.sig(None) == "—" and R.sig(3) == "3" and R.sig(0.310) == "0.31"
    assert R.fmt_interval([0.881, 0.94]) == "[0.881, 0.94]" and R.fmt_range([0.881, 0.94]) == "0.88–0.94"
    assert R._spread_cell({"median": 85.1, "min": 84.0, "max": 86.0}).plain() == "85.1 (84–86)"


def test_headline_sentence_of_a_generation_benchmark():
    r = quickstart_results()
    assert R.headline_text(r) == ("quickstart/export/v1 (ONNX, 5.4 bits/param): 0.91 of the teacher's "
                                  "answer_likelihood above its baseline (95% CI 0.88–0.94), 4.3x faster decode, "
                                  "1/7 the size.")
    segments = {text: link for text, link in R.headline_segments(r) if link}
    assert segments == {"answer_likelihood": "def-answer-likelihood", "above its baseline": "def-quality-retained",
                        "4.3x faster decode": "def-decode-speedup", "1/7 the size": "def-size-ratio"}
    key = {row[0].text: row[1].plain() for row in R.key_figures_table(r).rows}
    assert key["parameters"] == "113.8M" and key["size on disk"] == "77 MB"
    versus = {row[0].text: row[2].text for row in R.key_figures_table(r).rows}
    assert versus["parameters"] == "0.85x the teacher's 134.5M" and versus["size on disk"] == "1/7 of the teacher's 538 MB"
    assert key["decode speedup"] == "4.3x" and key["baseline"] == "0.31"


def test_headline_sentence_of_a_scoring_benchmark_with_missing_keys():
    r = scoring_results()
    assert R.headline_text(r) == ("rank/export/v1 (ONNX int8, 8.9 bits/param): 0.81 of the teacher's ndcg@5, "
                                  "2.4x faster scoring, 1/12 the size.")
    html = R.render_html(r, {})
    assert "Scoring speed" in html and "1 eval group has a single candidate" in html
    int8 = next(row for row in R.quality_table(r).rows if row[1].text == "ONNX int8")
    assert (int8[5].text, int8[5].note, int8[-2].plain()) == ("0.83", "", "0.81")  # no intervals: plain values


def test_teacher_cannot_do_the_task_takes_the_first_line():
    r = teacher_cannot_results()
    text = R.headline_text(r)
    assert text.startswith("WARNING: The teacher cannot do this task: its answer_likelihood")
    assert "of the teacher's" not in text and "4.3x faster decode, 1/7 the size" in text
    html = R.render_html(r, {})
    assert html.index('class="alert" role="alert"') < html.index('class="answer"')
    md = R.render_markdown(r, {})
    assert md.splitlines()[2].startswith("> **Warning:** The teacher cannot do this task")
    verdicts = {row[0].text: (row[3].text, row[5].text) for row in R.gates_table(r).rows}
    assert verdicts["quality_retained"][0] == "✘ FAIL" and "cannot do this task" in verdicts["quality_retained"][1]


def test_gates_table_says_pass_and_fail_in_words_and_colour():
    r = quickstart_results()
    rows = {row[0].text: row for row in R.gates_table(r).rows}
    assert [c.plain() for c in rows["decode_speedup"]] == ["decode_speedup", ">= 5", "4.25", "✘ FAIL", "-0.745", "—"]
    assert rows["quality_retained"][3].text == "✔ pass" and rows["quality_retained"][3].cls == "pass"
    assert R.gates_summary(r) == ("✘ 2 of 3 gates pass; failed: decode_speedup.", "fail")
    html, md = R.render_html(r, {}), R.render_markdown(r, {})
    assert '<td class="fail">✘ FAIL</td>' in html and '<td class="pass">✔ pass</td>' in html
    assert "| ✘ FAIL |" in md and "**✘ 2 of 3 gates pass; failed: decode_speedup.**" in md
    r["gates"] = []
    assert "_No gates set" in R.render_markdown(r, {})


def test_a_skipped_runtime_gets_one_reason_per_row_and_the_install_hint_once():
    r = quickstart_results()
    quality = {(row[0].text, row[1].text): row for row in R.quality_table(r).rows}
    assert quality[("export/v1 (final)", "GGUF")][-1].plain() == "not measured: llama-cpp-python is not installed [1]"
    speed = {(row[0].text, row[1].text): row for row in R.speed_table(r).rows}
    assert speed[("export/v1 (final)", "llama_cpp")][-1].plain() == "skipped: llama-cpp-python is not installed [1]"
    md, html = R.render_markdown(r, {}), R.render_html(r, {})
    assert md.count("pip install 'slmkit[llamacpp]'") == 1 and md.count("llama-cpp-python is not installed") == 2
    assert _text(html).count("pip install 'slmkit[llamacpp]'") == 1 and 'id="fn-1"' in html
    mixed = R._notes_cell({"quality": {"rouge_l": 0.2}, "quality_skipped": {
        "task": "no eval examples with a reference", "lm_eval": "lm_eval is not installed (pip install 'slmkit[eval]')"}},
        ["pip install 'slmkit[eval]'"])
    assert mixed.plain() == "task: no eval examples with a reference; lm_eval: lm_eval is not installed [1]"


def test_every_model_row_and_figure_is_human_formatted():
    r = quickstart_results()
    md = R.render_markdown(r, {})
    for model in ("teacher", "prune/v1", "seqkd/v1", "onpolicy/v1", "export/v1 (final)"):
        assert f"| {model} |" in md
    assert "134.5M" in md and "538 MB" in md and "134515008" not in md
    assert "85.1 (84–86)" in md and "| 4.3x |" in md
    assert "0.937 [0.915, 0.957]" in md  # the final model's answer_likelihood with its interval


def test_definitions_link_to_anchors_that_exist_in_the_docs():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "benchmark.md").read_text()
    anchors = {a for a, _ in R.DEFINITIONS.values()} | {R.SCORING_DEFINITION[0]}
    assert [a for a in anchors if f'<a id="{a}"></a>' not in docs] == []
    html = R.render_html(quickstart_results(), {})
    for link in set(re.findall(r'href="#([^"]+)"', html)):
        assert f'id="{link}"' in html, link  # every in-page link lands somewhere


def _label_boxes(fig):
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    return ax, [t.get_window_extent(renderer) for t in ax.texts], ax.get_window_extent(renderer)


def _marker_centres(ax):
    """Display positions of the plotted points (the errorbar series' data)."""
    return [ax.transData.transform(xy) for c in ax.containers for xy in c.lines[0].get_xydata()]


@pytest.mark.parametrize("llama_cpp", [False, True], ids=["5 points", "6 points"])
def test_pareto_plot_labels_do_not_overlap_and_carry_intervals(llama_cpp):
    r = quickstart_results(llama_cpp)
    for fig in (R.pareto_figure(r), R.size_quality_figure(r)):
        ax, boxes, frame = _label_boxes(fig)
        assert len(boxes) == 5 + llama_cpp
        assert [(i, j) for i, a in enumerate(boxes) for j, b in enumerate(boxes) if i < j and a.overlaps(b)] == []
        assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)
        assert not any(b.contains(x, y) for b in boxes for x, y in _marker_centres(ax))  # no label hides a point
        families = {c.get_label() for c in ax.containers}  # one errorbar series per runtime family
        assert families == {"PyTorch", "ONNX Runtime"} | ({"llama.cpp"} if llama_cpp else set())
        assert {t.get_text(): t.get_fontweight() for t in ax.texts}["teacher"] == "bold"
    texts = sorted(t.get_text() for t in R.pareto_figure(r).axes[0].texts)
    exports = ["export/v1 · GGUF", "export/v1 · ONNX"] if llama_cpp else ["export/v1"]
    assert texts == [*exports, "onpolicy/v1", "prune/v1", "seqkd/v1", "teacher"]


def test_rendering_is_deterministic_and_the_images_are_in_both_documents(tmp_path):
    write_report(quickstart_results(), tmp_path / "a")
    write_report(quickstart_results(), tmp_path / "b")
    for name in ("report.html", "report.md", "pareto.png", "size_quality.png", "results.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    md = (tmp_path / "a" / "report.md").read_text()
    assert "](pareto.png)" in md and "](size_quality.png)" in md
    html = (tmp_path / "a" / "report.html").read_text()
    assert '<meta name="viewport"' in html and "@media print" in html and "<script" not in html


def test_compare_page_marks_differences_beyond_noise(tmp_path):
    a, b = quickstart_results(), copy.deepcopy(quickstart_results())
    b["speed"][4]["batches"][0]["decode_tok_s"].update(median=120.0, min=118.0, max=122.0)
    write_report(a, tmp_path / "a")
    write_report(b, tmp_path / "b")
    out = write_compare(tmp_path / "a", tmp_path / "b", tmp_path / "cmp" / "compare.html")
    html = out.read_text()
    row = re.search(r'<tr class="beyond">(.*?)</tr>', html).group(1)
    assert "export/v1 onnxruntime_genai b1 decode tok/s" in row and "▲ larger than noise" in _text(row)
    assert "1 of " in _text(html) and "within noise" in html and "http" not in html
    assert write_compare(tmp_path / "a", tmp_path / "b", tmp_path / "again.html").read_bytes() == out.read_bytes()


def test_compare_command_prints_the_table_and_writes_the_page(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from slmkit.cli import app

    write_report(quickstart_results(), tmp_path / "a")
    write_report(quickstart_results(), tmp_path / "b")
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                                   str(tmp_path / "out" / "cmp.html")])
    assert res.exit_code == 0, res.output
    assert "slmkit compare" in res.output and f"wrote {tmp_path / 'out' / 'cmp.html'}" in res.output
    assert "0 of " in _text((tmp_path / "out" / "cmp.html").read_text())  # a run against itself: nothing moved
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ["compare", "a", "b"]).exit_code == 0 and (tmp_path / "compare.html").is_file()
