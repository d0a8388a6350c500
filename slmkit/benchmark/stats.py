"""Paired bootstrap confidence intervals of quality figures over eval examples: numpy only.

A quality figure is a ratio of sums of per-example values, so each example carries a numerator
and a denominator (``PerExample``): an accuracy is ``sum(correct) / sum(1)``, top-1 agreement
``sum(matches) / sum(positions)``, perplexity ``exp(sum(nll) / sum(tokens))``. Resampling whole
examples (not tokens) keeps the dependence between a prompt's tokens, and resampling the teacher
and the model with the same indices keeps their pairing: both were scored on the same prompts,
so most of the between-prompt variance cancels in their difference and ratio (Koehn 2004,
"Statistical significance tests for machine translation evaluation"; Efron & Tibshirani 1993).

Intervals use the percentile method and are deterministic given the seed: the index matrix
comes from ``numpy.random.Generator(PCG64(seed))``. A resample whose figure is undefined (a zero
denominator, a ratio over a zero teacher) is dropped; when fewer than half of the resamples are
defined, or the point estimate itself is undefined, the interval is None rather than a number
that describes some other quantity. Figures that are not ratios of sums (AUC, ECE) do not fit
here; ranking figures do, with one "example" per group (den 0 for a group that is skipped).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

CHUNK_ELEMENTS = 4_000_000  # resampled values gathered at once: bounds memory for large eval sets


@dataclass(frozen=True, eq=False)  # arrays have no single truth value: compare fields explicitly
class PerExample:
    """Per-example numerator and denominator of one figure; ``ids`` name the examples for pairing."""

    num: np.ndarray
    den: np.ndarray
    ids: tuple[Hashable, ...] | None = None

    def __post_init__(self) -> None:
        num, den = np.asarray(self.num, dtype=np.float64), np.asarray(self.den, dtype=np.float64)
        if num.ndim != 1 or num.shape != den.shape:
            raise ValueError(f"num and den must be 1-D of one length, got {num.shape} and {den.shape}")
        if not (np.isfinite(num).all() and np.isfinite(den).all()) or (den < 0).any():
            raise ValueError("per-example values must be finite and denominators non-negative")
        if self.ids is not None and len(self.ids) != len(num):
            raise ValueError(f"{len(self.ids)} ids for {len(num)} examples")
        # frozen dataclass: set the normalised arrays without going through __setattr__
        object.__setattr__(self, "num", num)
        object.__setattr__(self, "den", den)
        object.__setattr__(self, "ids", None if self.ids is None else tuple(self.ids))

    @classmethod
    def of_values(cls, values: Sequence[float], ids: Sequence[Hashable] | None = None) -> PerExample:
        """Plain per-example scores (denominator 1 each): the figure is their mean."""
        values = np.asarray(values, dtype=np.float64)
        return cls(values, np.ones_like(values), None if ids is None else tuple(ids))

    def __len__(self) -> int:
        return len(self.num)

    def to_dict(self) -> dict:
        """JSON-ready form, for results.json."""
        ids = None if self.ids is None else list(self.ids)
        return {"num": self.num.tolist(), "den": self.den.tolist(), "ids": ids}

    @classmethod
    def from_dict(cls, d: dict) -> PerExample:
        return cls(np.asarray(d["num"]), np.asarray(d["den"]), d.get("ids"))


# figure name -> transform of sum(num) / sum(den); a closed registry, unknown names are errors
FIGURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda ratio: ratio,  # accuracy, ROUGE-L, exact match, top-1 agreement, mean KL
    "perplexity": np.exp,  # num = summed token NLL of an example, den = its target count
}


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its bootstrap interval; either is None where undefined."""

    value: float | None
    ci: tuple[float, float] | None

    def to_dict(self) -> dict:
        return {"value": self.value, "ci": None if self.ci is None else list(self.ci)}


@dataclass(frozen=True, eq=False)
class PairedCIs:
    """Model, teacher and derived figures of one report, all from one index matrix."""

    model: Estimate
    teacher: Estimate
    difference: Estimate  # model - teacher
    quality_retained: Estimate  # model / teacher, teacher / model for lower-is-better figures
    above_baseline: Estimate | None  # (model - baseline) / (teacher - baseline); None without a baseline
    indices: np.ndarray  # [n_resamples, n_examples]: pass it on to score other figures alike


@dataclass(frozen=True)
class Significance:
    """Whether two runs' figures differ: the CI of ``b - a`` and whether it excludes 0."""

    difference: float | None
    ci: tuple[float, float] | None
    significant: bool | None  # None when no interval could be formed
    method: str  # "paired bootstrap", "unpaired bootstrap" or "interval overlap"


def resample_indices(n: int, n_resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """[n_resamples, n] example indices drawn with replacement; the same seed gives the same matrix."""
    if n < 1 or n_resamples < 1:
        raise ValueError(f"need at least one example and one resample, got n={n}, n_resamples={n_resamples}")
    return _draw(np.random.Generator(np.random.PCG64(seed)), n, n_resamples)


def _draw(rng: np.random.Generator, n: int, n_resamples: int) -> np.ndarray:
    return rng.integers(0, n, size=(n_resamples, n), dtype=np.int64)


def _check_figure(figure: str) -> None:
    if figure not in FIGURES:
        raise ValueError(f"unknown figure {figure!r}; known: {sorted(FIGURES)}")


def _check(figure: str, level: float) -> None:
    _check_figure(figure)
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with NaN (undefined) where den is 0, without numpy's warnings."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def figure_resamples(per_example: PerExample, figure: str, indices: np.ndarray) -> np.ndarray:
    """The figure on each row of ``indices`` ([R] floats, NaN where a resample's denominator is 0)."""
    _check_figure(figure)
    rows = max(1, CHUNK_ELEMENTS // max(1, indices.shape[1]))
    num = np.empty(len(indices))
    den = np.empty(len(indices))
    for lo in range(0, len(indices), rows):
        block = indices[lo : lo + rows]
        num[lo : lo + rows] = per_example.num[block].sum(axis=1)
        den[lo : lo + rows] = per_example.den[block].sum(axis=1)
    with np.errstate(over="ignore"):
        return FIGURES[figure](_safe_div(num, den))


def figure_value(per_example: PerExample, figure: str = "mean") -> float | None:
    """The figure on all examples, by the same code path as the resamples (so they agree bit for bit)."""
    if len(per_example) == 0:
        return None
    v = figure_resamples(per_example, figure, np.arange(len(per_example))[None, :])[0]
    return float(v) if np.isfinite(v) else None


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of bootstrap samples; undefined (non-finite) ones dropped, None if most are."""
    samples = np.asarray(samples, dtype=np.float64)
    ok = samples[np.isfinite(samples)]
    if len(ok) == 0 or 2 * len(ok) < len(samples):
        return None
    alpha = (1 - level) / 2
    lo, hi = np.quantile(ok, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap_ci(
    per_example: PerExample,
    figure: str = "mean",
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    indices: np.ndarray | None = None,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of one figure; None when the figure is undefined or there is no data."""
    _check(figure, level)
    if figure_value(per_example, figure) is None:
        return None
    idx = resample_indices(len(per_example), n_resamples, seed) if indices is None else indices
    return percentile_ci(figure_resamples(per_example, figure, idx), level)


# ---------------------------------------------------------------- derived figures, paired


def retained_rows(model: np.ndarray, teacher: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """``quality.retained`` element-wise: model / teacher (inverted when lower is better), 0/0 = 1."""
    num, den = (model, teacher) if higher_is_better else (teacher, model)
    out = _safe_div(num, den)
    return np.where((den == 0) & (num == 0), 1.0, out)


def above_baseline_rows(model: np.ndarray, teacher: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """(model - baseline) / (teacher - baseline) element-wise; NaN where the teacher equals the baseline.

    The same expression serves lower-is-better figures: (b - m) / (b - t) is its sign-flipped twin.
    """
    return _safe_div(np.asarray(model) - baseline, np.asarray(teacher) - baseline)


def _estimate(point: np.ndarray, samples: np.ndarray, level: float) -> Estimate:
    """Point from the one-row evaluation, interval from the resamples; no interval without a point."""
    p = float(point[0])
    if not np.isfinite(p):
        return Estimate(None, None)
    return Estimate(p, percentile_ci(samples, level))


def align(a: PerExample, b: PerExample) -> PerExample | None:
    """``b`` reordered to ``a``'s example ids; None unless both carry the same set of unique ids."""
    if a.ids is None or b.ids is None or len(a) != len(b) or len(set(a.ids)) != len(a):
        return None
    where = {i: k for k, i in enumerate(b.ids)}
    if set(where) != set(a.ids):
        return None
    order = np.array([where[i] for i in a.ids], dtype=np.int64)
    return PerExample(b.num[order], b.den[order], a.ids)


def _paired_inputs(teacher: PerExample, model: PerExample) -> PerExample:
    """The model aligned to the teacher's examples; fail loudly when they cannot be paired."""
    if teacher.ids is not None and model.ids is not None:
        aligned = align(teacher, model)
        if aligned is None:
            raise ValueError("teacher and model were not scored on the same example ids")
        return aligned
    if len(teacher) != len(model):
        raise ValueError(f"teacher has {len(teacher)} examples, the model {len(model)}: cannot pair them")
    return model


def _figure_both(pe: PerExample, figure: str, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(point as a one-element array, resamples) of one figure."""
    return figure_resamples(pe, figure, np.arange(len(pe))[None, :]), figure_resamples(pe, figure, idx)


def paired_bootstrap(
    teacher: PerExample,
    model: PerExample,
    figure: str = "mean",
    higher_is_better: bool = True,
    baseline: PerExample | float | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    indices: np.ndarray | None = None,
) -> PairedCIs:
    """CIs of model, teacher, model - teacher, quality_retained and above-baseline from ONE index matrix.

    ``baseline`` is per-example (a trivial answer scored on each prompt, resampled with the same
    indices) or a constant in the figure's units. Pass ``indices`` (from ``resample_indices`` or an
    earlier result's ``.indices``) so every figure of one report uses the same resamples.
    """
    _check(figure, level)
    model = _paired_inputs(teacher, model)
    idx = resample_indices(len(teacher), n_resamples, seed) if indices is None else indices
    if idx.shape[1] != len(teacher):
        raise ValueError(f"indices are over {idx.shape[1]} examples, the data has {len(teacher)}")
    (tp, ts), (mp, ms) = _figure_both(teacher, figure, idx), _figure_both(model, figure, idx)
    above = None
    if baseline is not None:
        if isinstance(baseline, PerExample):
            bp, bs = _figure_both(_paired_inputs(teacher, baseline), figure, idx)
        else:
            bp, bs = np.array([float(baseline)]), np.float64(baseline)
        above = _estimate(above_baseline_rows(mp, tp, bp), above_baseline_rows(ms, ts, bs), level)
    return PairedCIs(
        model=_estimate(mp, ms, level),
        teacher=_estimate(tp, ts, level),
        difference=_estimate(mp - tp, ms - ts, level),
        quality_retained=_estimate(
            retained_rows(mp, tp, higher_is_better), retained_rows(ms, ts, higher_is_better), level
        ),
        above_baseline=above,
        indices=idx,
    )


# ---------------------------------------------------------------- two runs (slmkit compare A B)


def _excludes_zero(ci: tuple[float, float] | None) -> bool | None:
    return None if ci is None else bool(ci[0] > 0 or ci[1] < 0)


def difference_significant(
    a: PerExample,
    b: PerExample,
    figure: str = "mean",
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Significance:
    """Bootstrap CI of figure(b) - figure(a) and whether 0 lies outside it.

    Paired (one index matrix over the examples, ``b`` aligned by id) when both runs carry the same
    set of example ids; otherwise unpaired: each run resampled independently from one seeded stream.
    """
    _check(figure, level)
    va, vb = figure_value(a, figure), figure_value(b, figure)
    if va is None or vb is None:
        return Significance(None, None, None, "unpaired bootstrap")
    b_aligned = align(a, b)
    rng = np.random.Generator(np.random.PCG64(seed))
    if b_aligned is not None:
        idx = _draw(rng, len(a), n_resamples)
        b, idx_b, method = b_aligned, idx, "paired bootstrap"
    else:
        idx, idx_b = _draw(rng, len(a), n_resamples), _draw(rng, len(b), n_resamples)
        method = "unpaired bootstrap"
    samples = figure_resamples(b, figure, idx_b) - figure_resamples(a, figure, idx)
    ci = percentile_ci(samples, level)
    return Significance(vb - va, ci, _excludes_zero(ci), method)


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two closed intervals share a point.

    A conservative test when only two runs' CIs were saved: disjoint 95% intervals imply a
    significant difference, but overlapping ones do not imply its absence (Schenker & Gentleman 2001).
    """
    return bool(max(a[0], b[0]) <= min(a[1], b[1]))


def compare_saved(a: dict, b: dict, figure: str = "mean", **bootstrap) -> Significance:
    """Two saved figure entries ``{"value", "ci", "per_example"?}`` of results.json: is B - A significant?

    The per-example values are used when both entries carry them (a real paired or unpaired
    bootstrap); otherwise only the saved intervals are compared (``intervals_overlap``), whose
    ``significant`` is True for disjoint intervals and None (undecided) for overlapping ones.
    """
    if a.get("per_example") and b.get("per_example"):
        pa, pb = PerExample.from_dict(a["per_example"]), PerExample.from_dict(b["per_example"])
        return difference_significant(pa, pb, figure, **bootstrap)
    va, vb = a.get("value"), b.get("value")
    diff = None if va is None or vb is None else vb - va
    if not a.get("ci") or not b.get("ci"):
        return Significance(diff, None, None, "interval overlap")
    overlap = intervals_overlap(tuple(a["ci"]), tuple(b["ci"]))
    return Significance(diff, None, None if overlap else True, "interval overlap")
