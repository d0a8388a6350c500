"""The results document: sizes, parameter counts, ratios against the teacher, and the headline.

Everything here works on plain dicts (the results.json content), so `slmkit report` can
re-derive a report from a saved file without any model. The schema is documented in
docs/benchmark.md; bump SCHEMA_VERSION when a field changes meaning.
"""

from __future__ import annotations

import json
from pathlib import Path

SCHEMA_VERSION = 1
BASELINE_BACKEND = "torch_fp32"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".data", ".onnx_data", ".gguf", ".pt")


def size_on_disk(path: Path) -> int:
    """Bytes of the weight files (tokenizers and configs excluded: they would swamp small models)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))


def count_params_safetensors(hf_dir: Path) -> int:
    """Parameters from the safetensors headers alone: no weights are read."""
    from safetensors import safe_open

    total = 0
    for f in sorted(Path(hf_dir).glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for name in st.keys():
                n = 1
                for d in st.get_slice(name).get_shape():
                    n *= d
                total += n
    return total


def count_params_onnx(onnx_dir: Path) -> int:
    """Logical parameters of an ONNX graph: 4-bit MatMulNBits weights count as K x N, not packed bytes.

    Tied embeddings are stored twice by onnxruntime-genai's builder (embedding and lm_head), so this
    can exceed the PyTorch count by the embedding size.
    """
    import onnx

    total, packed = 0, set()
    for f in sorted(Path(onnx_dir).glob("*.onnx")):
        graph = onnx.load(str(f), load_external_data=False).graph
        for node in graph.node:
            if node.op_type == "MatMulNBits":
                attrs = {a.name: a.i for a in node.attribute}
                total += attrs["K"] * attrs["N"]
                packed.update(node.input[1:])
        for init in graph.initializer:
            if init.name not in packed:
                n = 1
                for d in init.dims:
                    n *= d
                total += n
    return total


def count_params_gguf(gguf_file: Path) -> int:
    from gguf import GGUFReader

    return int(sum(int(t.n_elements) for t in GGUFReader(str(gguf_file)).tensors))


def count_params(fmt: str, path: Path) -> int:
    return {"hf": count_params_safetensors, "onnx": count_params_onnx, "gguf": count_params_gguf}[fmt](path)


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return num / den


def _median(row: dict | None, key: str) -> float | None:
    if not row or row.get("status") != "ok":
        return None
    return row[key]["median"] if key != "latency_ms" else row[key]["p50"]


def _batch(entry: dict | None, batch_size: int) -> dict | None:
    if not entry:
        return None
    return next((b for b in entry.get("batches", []) if b["batch_size"] == batch_size), None)


def batch_ratios(row: dict, ref: dict | None) -> dict | None:
    """Speed-ups of one batch row over a reference row (>1 means faster than the reference)."""
    if ref is None or ref.get("status") != "ok" or row.get("status") != "ok":
        return None
    return {
        "decode_speedup": _ratio(_median(row, "decode_tok_s"), _median(ref, "decode_tok_s")),
        "prefill_speedup": _ratio(_median(row, "prefill_tok_s"), _median(ref, "prefill_tok_s")),
        "ttft_speedup": _ratio(_median(ref, "ttft_ms"), _median(row, "ttft_ms")),
        "latency_speedup": _ratio(_median(ref, "latency_ms"), _median(row, "latency_ms")),
    }


def entry_ratios(entry: dict, ref: dict | None) -> dict | None:
    """Memory and size reductions and concurrent-throughput gain of a (model, backend) over a reference."""
    if ref is None or ref.get("status") != "ok":
        return None
    conc, rconc = entry.get("concurrency") or {}, ref.get("concurrency") or {}
    gain = None
    if conc.get("status") == "ok" and rconc.get("status") == "ok":
        gain = _ratio(conc["throughput_tok_s"]["median"], rconc["throughput_tok_s"]["median"])
    return {
        "memory_reduction": _ratio(ref.get("peak_rss_mb"), entry.get("peak_rss_mb")),
        "size_reduction": _ratio(ref.get("size_bytes"), entry.get("size_bytes")),
        "throughput_gain": gain,
    }


def add_ratios(results: dict) -> None:
    """Annotate every speed entry against the teacher on the same backend and the teacher's fp32 baseline."""
    teacher = results["teacher"]
    by_key = {(e["model"], e["backend"]): e for e in results["speed"]}
    base = by_key.get((teacher, BASELINE_BACKEND))
    for e in results["speed"]:
        same = by_key.get((teacher, e["backend"]))
        e["ratios"] = {
            "vs_teacher_same_backend": entry_ratios(e, same),
            "vs_teacher_baseline": entry_ratios(e, base),
        }
        for b in e.get("batches", []):
            b["ratios"] = {
                "vs_teacher_same_backend": batch_ratios(b, _batch(same, b["batch_size"])),
                "vs_teacher_baseline": batch_ratios(b, _batch(base, b["batch_size"])),
            }


def _variant(results: dict, model_id: str, fmt: str) -> dict | None:
    for m in results["models"]:
        if m["id"] == model_id:
            return next((v for v in m.get("variants", []) if v["format"] == fmt), None)
    return None


def headline(results: dict) -> dict:
    """The final artifact against the teacher: its fastest variant at the first batch size.

    decode_speedup compares with the teacher's PyTorch fp32 decode rate at that batch size (the
    baseline a user starts from); size_ratio and params_ratio are final / teacher (lower is smaller).
    """
    final, teacher, b0 = (
        results.get("final_model"),
        results["teacher"],
        results["settings"]["speed"]["batch_sizes"][0],
    )
    out = {
        "model": final,
        "variant_format": None,
        "backend": None,
        "batch_size": b0,
        "quality_retained": None,
        "decode_speedup": None,
        "size_ratio": None,
        "params_ratio": None,
    }
    if final is None:
        return out
    base = _median(
        _batch(
            next(
                (e for e in results["speed"] if e["model"] == teacher and e["backend"] == BASELINE_BACKEND),
                None,
            ),
            b0,
        ),
        "decode_tok_s",
    )
    best = max(
        ((e, _median(_batch(e, b0), "decode_tok_s")) for e in results["speed"] if e["model"] == final),
        key=lambda p: p[1] or -1.0,
        default=(None, None),
    )
    model = next(m for m in results["models"] if m["id"] == final)
    fmt = (
        best[0]["format"]
        if best[0] and best[1]
        else (model.get("variants") or [{"format": None}])[0]["format"]
    )
    variant, tvariant = _variant(results, final, fmt), _variant(results, teacher, "hf")
    out.update(
        variant_format=fmt,
        backend=best[0]["backend"] if best[1] else None,
        decode_speedup=_ratio(best[1], base),
    )
    if variant:
        out.update(retention_figures(results, variant, tvariant))
        if tvariant:
            out["size_ratio"] = _ratio(variant.get("size_bytes"), tvariant.get("size_bytes"))
            out["params_ratio"] = _ratio(variant.get("params"), tvariant.get("params"))
    return out


def retention_figures(results: dict, variant: dict, teacher: dict | None) -> dict:
    """The headline's quality_retained (above the baseline where the primary figure has one), its
    interval, the plain ratio, and a note when the teacher itself is not above the baseline."""
    from slmkit.benchmark.uncertainty import teacher_beats_baseline

    p, up = results["primary_metric"], results.get("primary_higher_is_better", True)
    base = (results.get("baselines") or {}).get(p)
    above = base is not None and (variant.get("above_baseline") or {}).get(p) is not None
    out = {
        "quality_retained": variant.get("quality_retained"),
        "quality_retained_ci": (variant.get("above_baseline_ci" if above else "retained_ci") or {}).get(p),
        "quality_retained_basis": "above_baseline" if above else "ratio",
        "quality_retained_plain": variant.get("quality_retained_plain", variant.get("quality_retained")),
        "quality_retained_plain_ci": (variant.get("retained_ci") or {}).get(p),
        "baseline": base["value"] if base else None,
    }
    t_ci = ((teacher or {}).get("quality_ci") or {}).get(p)
    if base is not None and not teacher_beats_baseline(t_ci, base["value"], up):
        t = ((teacher or {}).get("quality") or {}).get(p)
        out["quality_retained_note"] = (
            f"the teacher cannot do this task: its {p} ({t:.4g}, 95% CI {t_ci[0]:.4g}-{t_ci[1]:.4g}) is not "
            f"above the baseline's ({base['value']:.4g}, {base['what']}), so the retention figure means nothing")
    return out


def gate_figures(results: dict) -> dict:
    """What gates may name: the headline figures, the final variant's quality figures, and the low /
    high ends of their intervals (``quality_retained_low``, ``rouge_l_high``, ...)."""
    h = results["headline"]
    figures = {k: h.get(k) for k in ("quality_retained", "decode_speedup", "scoring_speedup", "size_ratio",
                                     "params_ratio") if k in h}
    v = _variant(results, h["model"], h["variant_format"]) if h["model"] else None
    figures.update((v or {}).get("quality") or {})
    intervals = {"quality_retained": h.get("quality_retained_ci"), **((v or {}).get("quality_ci") or {})}
    for figure, ci in intervals.items():
        figures[f"{figure}_low"], figures[f"{figure}_high"] = (ci[0], ci[1]) if ci else (None, None)
    return figures


def gate_reasons(results: dict) -> dict[str, str]:
    """Why a gate fails whatever its figure: retention against a teacher no better than the baseline."""
    note = results["headline"].get("quality_retained_note")
    return dict.fromkeys(("quality_retained", "quality_retained_low", "quality_retained_high"), note) if note else {}


def load_results(path: Path) -> dict:
    """results.json from a file, a report artifact dir, or a run dir (its newest benchmark artifact)."""
    from slmkit.errors import InputError

    path = Path(path)
    if path.is_file():
        candidates = [path]
    elif (path / "results.json").is_file():
        candidates = [path / "results.json"]
    else:
        candidates = sorted(path.glob("*/v*/results.json"), key=lambda p: (p.stat().st_mtime, str(p)))
    if not candidates:
        raise InputError(
            f"{path}: no results.json here, nor in any <stage>/v<N>/ below it; run a benchmark first"
        )
    try:
        data = json.loads(candidates[-1].read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{candidates[-1]}: not a readable results.json ({e})") from e
    if data.get("schema_version") != SCHEMA_VERSION:
        raise InputError(
            f"{candidates[-1]}: schema_version {data.get('schema_version')!r}, expected {SCHEMA_VERSION}"
        )
    data["_path"] = str(candidates[-1])
    return data
