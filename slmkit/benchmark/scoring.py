"""The benchmark of a ranking / classification recipe: every scorer against the teacher.

Same results document and report as generation benchmarks (``results.json``, ``report.md``,
``report.html``, gates), with the task's metrics as quality figures (AUC, NDCG@k, MRR, accuracy,
log loss, ECE, teacher agreement) on ``data.eval``, ``quality_retained`` on
``task.primary_metric``, and scoring speed (items/s per batch size, per-context latency with 20
candidates) in place of decode speed. An export artifact is measured as its PyTorch model and
each ONNX file beside it.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from slmkit.benchmark import gates as gates_mod
from slmkit.benchmark.quality import SCORING_FIGURES
from slmkit.benchmark.results import SCHEMA_VERSION, count_params, gate_figures, size_on_disk
from slmkit.errors import InputError
from slmkit.tasks import evaluate as E
from slmkit.tasks.metrics import retained

CANDIDATES = 20  # candidates per context of the latency figure
ONNX_VARIANTS = {"scorer.onnx": "onnx", "scorer.int8.onnx": "onnx_int8"}


def scorer_dirs(entry: dict) -> tuple[Path, Path | None]:
    """(PyTorch model dir, ONNX dir or None) of a benchmark entry; export artifacts hold both."""
    path = Path(entry["path"])
    if entry.get("kind") != "export":
        return path, None
    if (path / "hf" / "config.json").is_file():
        return path / "hf", path / "onnx"
    import json

    inputs = json.loads((path / "manifest.json").read_text()).get("inputs", [])
    source = next((Path(i["path"]) for i in inputs if i["role"] == "input"), None)
    if source is None or not (source / "config.json").is_file():
        raise InputError(f"{path}: an export artifact without hf/ whose input model is gone; re-run the export")
    return source, path / "onnx"


def figure_directions(task) -> dict[str, bool]:
    return {**SCORING_FIGURES, f"ndcg@{E.ndcg_k(task)}": True}


def _figures(metrics: dict, task) -> dict:
    keep = figure_directions(task)
    return {k: v for k, v in metrics.items() if k in keep}


def _variants(entry: dict, measured: dict, teacher_logits, task, model_dir: Path, onnx_dir: Path | None) -> list:
    params = count_params("hf", model_dir)
    agree = E.agreement(measured["logits"], teacher_logits) if teacher_logits is not None else {}
    hf = {"format": "hf", "path": str(model_dir), "size_bytes": size_on_disk(model_dir), "params": params,
          "quality_backend": "torch", "quality": _figures({**measured["metrics"], **agree}, task),
          "quality_skipped": {}, "notes": measured["notes"], "scorer": measured["scorer"]}
    out = [hf]
    for name, metrics in measured["onnx_metrics"].items():
        out.append({"format": ONNX_VARIANTS[name], "path": str(onnx_dir / name),
                    "size_bytes": (onnx_dir / name).stat().st_size, "params": params,
                    "quality_backend": "onnxruntime", "quality": _figures(metrics, task), "quality_skipped": {},
                    "notes": []})
    return out


def _speed_rows(model_id: str, speed: dict) -> list[dict]:
    fmt = {"torch": "hf", "torch-independent": "hf", **{f"onnxruntime:{n}": f for n, f in ONNX_VARIANTS.items()}}
    return [{"model": model_id, "format": fmt[backend], "backend": backend, "status": "ok", **figures}
            for backend, figures in speed.items()]


def _add_retained(docs: list[dict], task) -> None:
    directions = figure_directions(task)
    teacher = docs[0]["variants"][0]["quality"]
    for doc in docs:
        for v in doc["variants"]:
            v["retained"] = {f: retained(v["quality"].get(f), teacher.get(f), f) for f in directions}
            v["quality_retained"] = v["retained"].get(task.primary_metric)


def _ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def scoring_headline(results: dict) -> dict:
    """The final artifact's fastest variant (items/s, 20 candidates per context) against the teacher."""
    key = f"items_per_s@{CANDIDATES}_per_context"
    final = results["final_model"]
    out = {"model": final, "variant_format": None, "backend": None, "quality_retained": None,
           "scoring_speedup": None, "size_ratio": None, "params_ratio": None}
    if final is None:
        return out
    base = next((s[key] for s in results["scoring_speed"] if s["model"] == "teacher" and s["backend"] == "torch"), None)
    best = max((s for s in results["scoring_speed"] if s["model"] == final), key=lambda s: s[key], default=None)
    variants = {(m["id"], v["format"]): v for m in results["models"] for v in m["variants"]}
    fmt = best["format"] if best else "hf"
    v, t = variants[(final, fmt)], variants[("teacher", "hf")]
    out.update(variant_format=fmt, backend=best and best["backend"], quality_retained=v["quality_retained"],
               scoring_speedup=_ratio(best and best[key], base), size_ratio=_ratio(v["size_bytes"], t["size_bytes"]),
               params_ratio=_ratio(v["params"], t["params"]))
    return out


def benchmark_scorers(models: list[dict], rows: list, task, cfg, log=lambda _: None, recipe_name=None) -> dict:
    """Measure the teacher (first entry) and every scorer artifact; the results document."""
    from slmkit.benchmark.speed import hardware_info
    from slmkit.tasks.stage import measure_scorer

    docs, speed, teacher_logits = [], [], None
    for entry in models:
        model_dir, onnx_dir = scorer_dirs(entry)
        log(f"benchmark: {entry['id']} scoring {len(rows)} eval rows and timing it")
        m = measure_scorer(model_dir, rows, task, batch_sizes=cfg.speed.batch_sizes, candidates=CANDIDATES,
                           onnx_dir=onnx_dir)
        teacher_logits = m["logits"] if teacher_logits is None else teacher_logits
        doc = {k: (str(v) if isinstance(v, Path) else v) for k, v in entry.items()}
        doc.update(status="ok", reason=None, variants=_variants(entry, m, teacher_logits, task, model_dir, onnx_dir))
        docs.append(doc)
        speed += _speed_rows(entry["id"], m["speed"])
    _add_retained(docs, task)
    results = {
        "schema_version": SCHEMA_VERSION, "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "recipe": recipe_name, "task": task.kind, "primary_metric": task.primary_metric,
        "primary_higher_is_better": figure_directions(task)[task.primary_metric], "teacher": "teacher",
        "final_model": docs[-1]["id"] if len(docs) > 1 else None, "hardware": hardware_info(),
        "settings": cfg.model_dump(mode="json"), "eval_examples": len(rows), "models": docs, "speed": [],
        "scoring_speed": speed,
    }
    results["headline"] = scoring_headline(results)
    results["gates"] = gates_mod.evaluate_gates(cfg.parsed_gates, gate_figures(results))
    results["gates_passed"] = all(g["passed"] for g in results["gates"])
    return results
