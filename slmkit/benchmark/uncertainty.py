"""Confidence intervals and chance baselines on the results document (plain dicts, numpy only).

Every quality figure with per-example values gets a 95% interval from a paired bootstrap over
eval examples: the teacher and each model are resampled with the same indices, so the
between-prompt variance they share cancels in their ratio. Seeded: a rerun gives the same
intervals. Where a figure has a trivial or chance baseline (a trivial answer's ROUGE-L, a
unigram model's perplexity), retention is also measured above it:
(model - baseline) / (teacher - baseline).
"""

from __future__ import annotations

from slmkit.benchmark.quality import figure_kind
from slmkit.benchmark.stats import PerExample, bootstrap_ci, figure_value, paired_bootstrap, resample_indices

N_RESAMPLES = 2000
SEED = 0
LEVEL = 0.95


def baseline_entry(per_example: PerExample, figure: str, what: str) -> dict:
    """A baseline's value, its own interval and per-example values, as results.json keeps it."""
    kind = figure_kind(figure)
    ci = bootstrap_ci(per_example, kind, n_resamples=N_RESAMPLES, seed=SEED, level=LEVEL)
    return {"value": figure_value(per_example, kind), "ci": None if ci is None else list(ci), "what": what,
            "per_example": per_example.to_dict()}


def _teacher_per_example(models: list[dict]) -> dict[str, PerExample]:
    teacher = next((v for v in models[0].get("variants", []) if v["format"] == "hf"), None) if models else None
    return {f: PerExample.from_dict(d) for f, d in ((teacher or {}).get("per_example") or {}).items()}


def add_intervals(models: list[dict], directions: dict[str, bool], baselines: dict[str, dict]) -> None:
    """Per variant: ``quality_ci``, ``retained_ci`` and, where a baseline exists, ``above_baseline``
    with ``above_baseline_ci``; every figure of one example set shares one index matrix."""
    teacher = _teacher_per_example(models)
    indices = {f: resample_indices(len(pe), N_RESAMPLES, SEED) for f, pe in teacher.items()}
    for m in models:
        for v in m.get("variants", []):
            v.update(quality_ci={}, retained_ci={}, above_baseline={}, above_baseline_ci={})
            for f, d in (v.get("per_example") or {}).items():
                if f not in teacher or f not in directions:
                    continue
                base = baselines.get(f)
                cis = paired_bootstrap(teacher[f], PerExample.from_dict(d), figure_kind(f), directions[f],
                                       baseline=PerExample.from_dict(base["per_example"]) if base else None,
                                       level=LEVEL, indices=indices[f])
                v["quality_ci"][f] = _ci(cis.model.ci)
                if f != "teacher_kl":  # the teacher's own KL is 0: no ratio exists
                    v["retained_ci"][f] = _ci(cis.quality_retained.ci)
                if cis.above_baseline is not None:
                    v["above_baseline"][f] = cis.above_baseline.value
                    v["above_baseline_ci"][f] = _ci(cis.above_baseline.ci)


def _ci(ci) -> list[float] | None:
    return None if ci is None else [float(ci[0]), float(ci[1])]


def teacher_beats_baseline(teacher_ci: list[float] | None, baseline: float | None, higher_is_better: bool) -> bool:
    """Whether the teacher is clearly better than the baseline: its whole interval on the right side."""
    if teacher_ci is None or baseline is None:
        return True  # nothing to compare: no claim either way
    return teacher_ci[0] > baseline if higher_is_better else teacher_ci[1] < baseline


def finalize_retention(models: list[dict], primary: str, baselines: dict[str, dict]) -> None:
    """``quality_retained`` of each variant: above the primary figure's baseline where one exists,
    else the plain ratio; the plain ratio stays as ``quality_retained_plain``."""
    for m in models:
        for v in m.get("variants", []):
            plain = (v.get("retained") or {}).get(primary)
            above = (v.get("above_baseline") or {}).get(primary)
            v["quality_retained_plain"] = plain
            v["quality_retained"] = above if primary in baselines and above is not None else plain
