"""The benchmark of a ranking / classification recipe: every scorer against the teacher.

Same results document and report as generation benchmarks (``results.json``, ``report.md``,
``report.html``, gates), with the task's metrics as quality figures (AUC, NDCG@k, MRR, accuracy,
log loss, ECE, teacher agreement) on ``data.eval``, and scoring speed (items/s per batch size,
per-context latency with 20 candidates) in place of decode speed. An export artifact is measured
as its PyTorch model and each ONNX file beside it.

Every figure carries a 95% interval from a paired bootstrap over whole groups (ranking) or rows
(classification), and each has its chance baseline as an exact expectation (a random order,
AUC 0.5, the majority label, the label base rate: ``slmkit.tasks.bootstrap``).
``quality_retained`` on ``task.primary_metric`` is measured above that baseline,
(model - chance) / (teacher - chance), the plain ratio staying as ``quality_retained_plain``;
when the teacher's own interval is not above chance the headline says so and gates on the
retention fail.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from slmkit.benchmark import gates as gates_mod
from slmkit.benchmark.quality import SCORING_FIGURES
from slmkit.benchmark.results import (
    SCHEMA_VERSION,
    count_params,
    gate_figures,
    gate_reasons,
    retention_figures,
    size_on_disk,
)
from slmkit.benchmark.uncertainty import finalize_retention
from slmkit.errors import InputError
from slmkit.tasks import bootstrap as BS
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
    """One entry per format; ``_probs`` (label distributions, popped once intervals are drawn) rides along."""
    params = count_params("hf", model_dir)

    def agree(logits):
        return E.agreement(logits, teacher_logits) if teacher_logits is not None else {}

    hf = {"format": "hf", "path": str(model_dir), "size_bytes": size_on_disk(model_dir), "params": params,
          "quality_backend": "torch", "quality": _figures({**measured["metrics"], **agree(measured["logits"])}, task),
          "quality_skipped": {}, "notes": measured["notes"], "scorer": measured["scorer"],
          "_probs": E.label_probs(measured["logits"])}
    out = [hf]
    for name, metrics in measured["onnx_metrics"].items():
        logits = measured["onnx_logits"][name]
        out.append({"format": ONNX_VARIANTS[name], "path": str(onnx_dir / name),
                    "size_bytes": (onnx_dir / name).stat().st_size, "params": params,
                    "quality_backend": "onnxruntime", "quality": _figures({**metrics, **agree(logits)}, task),
                    "quality_skipped": {}, "notes": [], "_probs": E.label_probs(logits)})
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


def _labels(rows) -> np.ndarray:
    return np.array([r.label for r in rows], dtype=np.int64)


def scoring_baselines(rows, task, units, idx, prior=None) -> tuple[dict, dict]:
    """(results.json ``baselines``, their samples) of the figures the benchmark reports."""
    directions, k = figure_directions(task), E.ndcg_k(task)
    samples = {f: v for f, v in BS.baseline_samples(_labels(rows), units, idx, k, prior, len(task.labels)).items()
               if f in directions}
    per_group = BS.random_order_values(_labels(rows), units, k) if units.grouped and len(task.labels) == 2 else {}
    out = {}
    for f, (values, what) in samples.items():
        point = float(values[0]) if np.isfinite(values[0]) else None
        ci = BS.percentile_ci(values[1:], BS.LEVEL) if point is not None else None
        out[f] = {"value": point, "ci": None if ci is None else list(ci), "what": what,
                  "per_example": per_group[f].to_dict() if f in per_group else None}
    return out, {f: v for f, (v, _) in samples.items()}


def add_intervals(docs: list[dict], rows, task, prior=None) -> dict:
    """Per variant ``quality_ci``, ``retained_ci``, ``above_baseline(_ci)`` and ``per_example``, from
    one paired bootstrap over groups (ranking) or rows (classification); returns the baselines."""
    y, k, directions = _labels(rows), E.ndcg_k(task), figure_directions(task)
    units = BS.Units.of([r.group for r in rows] if task.kind == "ranking" else None, len(rows))
    idx = BS.draws(units, BS.N_RESAMPLES, BS.SEED)
    baselines, base = scoring_baselines(rows, task, units, idx, prior)
    teacher_probs = docs[0]["variants"][0]["_probs"]
    drawn = []
    for doc in docs:
        for v in doc["variants"]:
            probs = v.pop("_probs")
            drawn.append((v, probs, BS.figure_samples(probs, y, units, idx, k, teacher_probs)))
    teacher = drawn[0][2]
    for v, probs, samples in drawn:
        v.update(quality_ci={}, retained_ci={}, above_baseline={}, above_baseline_ci={})
        for f in [f for f in samples if f in directions]:
            p = BS.paired(samples[f], teacher[f], directions[f], base.get(f))
            v["quality_ci"][f], v["retained_ci"][f] = _pair(p.ci), _pair(p.retained_ci)
            if p.above is not None:
                v["above_baseline"][f], v["above_baseline_ci"][f] = p.above, _pair(p.above_ci)
        # per-unit values of the figures that are means over units, so `slmkit compare` can pair runs
        v["per_example"] = {f: pe.to_dict() for f, pe in BS.unit_values(probs, y, units, k).items()
                            if f in directions}
    return baselines


def _pair(ci) -> list[float] | None:
    return None if ci is None else [float(ci[0]), float(ci[1])]


def _ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def scoring_headline(results: dict) -> dict:
    """The final artifact's fastest variant (items/s, 20 candidates per context) against the teacher:
    its retention above chance on the primary figure (``results.retention_figures``), speed and size."""
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
    out.update(variant_format=fmt, backend=best and best["backend"])
    out.update(retention_figures(results, v, t))
    out.update(scoring_speedup=_ratio(best and best[key], base), size_ratio=_ratio(v["size_bytes"], t["size_bytes"]),
               params_ratio=_ratio(v["params"], t["params"]))
    return out


def benchmark_scorers(models: list[dict], rows: list, task, cfg, log=lambda _: None, recipe_name=None,
                      prior=None) -> dict:
    """Measure the teacher (first entry) and every scorer artifact; the results document.

    ``rows`` are labelled eval rows. ``prior``: the label frequencies of the training rows, the
    base rate the log-loss and ECE baselines predict (the eval labels' own when None).
    """
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
    return scoring_results(docs, speed, rows, task, cfg, log, recipe_name, prior)


def scoring_results(docs: list[dict], speed: list[dict], rows: list, task, cfg, log=lambda _: None,
                    recipe_name=None, prior=None) -> dict:
    """The results document from measured variants (each with its ``_probs`` on ``rows``): ratios,
    intervals, baselines, retention above chance, the headline and the gate verdicts."""
    from slmkit.benchmark.speed import hardware_info

    _add_retained(docs, task)
    unit = "groups" if task.kind == "ranking" else "rows"
    log(f"benchmark: 95% intervals from {BS.N_RESAMPLES} paired bootstrap resamples of the eval {unit}")
    baselines = add_intervals(docs, rows, task, prior)
    finalize_retention(docs, task.primary_metric, baselines)
    results = {
        "schema_version": SCHEMA_VERSION, "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "recipe": recipe_name, "task": task.kind, "primary_metric": task.primary_metric,
        "primary_higher_is_better": figure_directions(task)[task.primary_metric], "teacher": "teacher",
        "final_model": docs[-1]["id"] if len(docs) > 1 else None, "hardware": hardware_info(),
        "settings": cfg.model_dump(mode="json"), "eval_examples": len(rows), "models": docs, "speed": [],
        "scoring_speed": speed, "baselines": baselines,
    }
    results["headline"] = scoring_headline(results)
    results["gates"] = gates_mod.evaluate_gates(cfg.parsed_gates, gate_figures(results), gate_reasons(results))
    results["gates_passed"] = all(g["passed"] for g in results["gates"])
    return results
