"""Verify a written artifact by loading it in the runtime that will serve it.

The source model greedily continues fixed prompts; each runtime is then fed exactly those
tokens (teacher forcing) and its next-token logits at every position are compared with the
source's: max |logit difference| and top-1 agreement. Full-precision exports must agree
everywhere and stay within a logit tolerance; int8 / int4 exports must reach a configurable
top-1 agreement (default 0.90).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slmkit.runtimes.config import VerifyConfig
from slmkit.runtimes.files import VerificationFailed

# how strictly an export is compared with its source (see VerifyConfig)
_FULL = {"fp32": "fp32", "F32": "fp32", "fp16": "fp16", "F16": "fp16", "bf16": "fp16"}


@dataclass
class Reference:
    """Teacher-forced token sequences and the source model's logits at every position."""

    sequences: list[list[int]]
    logits: list[np.ndarray]  # one [T, V] float32 array per sequence


def precision_class(precision: str) -> str:
    """fp32 | fp16 | quantized, for an ONNX precision or a GGUF type name."""
    return _FULL.get(precision, "quantized")


def compare_logits(ref: list[np.ndarray], got: list[np.ndarray]) -> dict:
    """Top-1 agreement (over all positions of all sequences), max |difference| of logits, and
    ``flip_margin``: the largest lead the source's top token had over the runtime's top token
    where the two differ (0.0 when they never do), which tells a near-tie flipped by rounding
    from a real disagreement."""
    agree, total, max_diff, flip_margin = 0, 0, 0.0, 0.0
    for r, g in zip(ref, got, strict=True):
        if r.shape[0] != g.shape[0]:
            raise ValueError(f"logits cover {g.shape[0]} positions, expected {r.shape[0]}")
        width = min(r.shape[1], g.shape[1])  # runtimes may pad the vocabulary
        r, g = r[:, :width], g[:, :width]
        top_r, top_g = r.argmax(-1), g.argmax(-1)
        agree += int((top_r == top_g).sum())
        total += r.shape[0]
        max_diff = max(max_diff, float(np.abs(r - g).max()))
        rows = np.arange(r.shape[0])
        lead = r[rows, top_r] - r[rows, top_g]
        flip_margin = max(flip_margin, float(lead.max(initial=0.0)))
    return {
        "top1_agreement": agree / total,
        "max_abs_logit_diff": max_diff,
        "flip_margin": flip_margin,
        "positions": total,
    }


def judge(metrics: dict, precision: str, cfg: VerifyConfig) -> list[str]:
    """Problems with ``metrics`` for an export of ``precision`` (fp32 | fp16 | quantized)."""
    problems = []
    top1, diff = metrics["top1_agreement"], metrics["max_abs_logit_diff"]
    if precision == "quantized":
        if top1 < cfg.min_top1_quantized:
            problems.append(f"top-1 agreement {top1:.3f} < required {cfg.min_top1_quantized:.3f}")
        return problems
    limit = cfg.max_abs_diff_fp32 if precision == "fp32" else cfg.max_abs_diff_fp16
    # a full-precision runtime may still round a near-tie the other way (llama.cpp keeps its KV
    # cache in f16): a flip counts only where the source's winner led by more than the two
    # logits' allowed drift
    margin = metrics.get("flip_margin", float("inf"))
    if top1 < cfg.min_top1_full_precision and margin > 2 * limit:
        problems.append(
            f"top-1 agreement {top1:.3f} < required {cfg.min_top1_full_precision:.3f} "
            f"(the source's top token led by up to {margin:.4g})"
        )
    if diff > limit:
        problems.append(f"max |logit diff| {diff:.4g} > allowed {limit:.4g} for {precision}")
    return problems


def reference_logits(model_dir: Path, cfg: VerifyConfig) -> Reference:
    """Greedy continuations of ``cfg.prompts`` by the source model and its fp32 logits on them."""
    from slmkit.runtimes.pytorch import greedy_reference

    return Reference(*greedy_reference(Path(model_dir), cfg.prompts, cfg.new_tokens))


def runtime_logits(fmt: str, path: Path, sequences: list[list[int]]) -> tuple[str, list[np.ndarray]]:
    """(runtime name, logits) of an artifact of ``fmt`` (hf | onnx | gguf), one sequence at a time."""
    from slmkit.runtimes import verification_lm

    runtime, lm = verification_lm(fmt, Path(path))
    return runtime, [lm.logits([s])[0].numpy() for s in sequences]


def verify_artifact(fmt: str, path: Path, reference: Reference, precision: str, cfg: VerifyConfig,
                    reporter=None) -> dict:
    """Load ``path`` in its runtime, compare with ``reference``; raise or warn per ``cfg.mode``.

    A file that does not load always raises: ``mode: warn`` relaxes the numeric thresholds,
    it never lets an unloadable file become an artifact.
    """
    try:
        runtime, got = runtime_logits(fmt, Path(path), reference.sequences)
    except VerificationFailed:
        raise
    except Exception as e:  # the runtime's own error says why it could not load the file
        raise VerificationFailed(f"{path}: {fmt} export does not load in its runtime: {type(e).__name__}: {e}") from e
    metrics = compare_logits(reference.logits, got)
    problems = judge(metrics, precision, cfg)
    result = {"runtime": runtime, "precision": precision, **metrics, "passed": not problems, "problems": problems}
    if problems:
        message = f"verification of the {fmt} export ({runtime}, {precision}) failed: " + "; ".join(problems)
        if cfg.mode == "error":
            raise VerificationFailed(message + " (set verify.mode: warn to keep it anyway)")
        if reporter is not None:
            reporter.warn(message)
    return result


class Verifier:
    """Computes the source model's reference once, then checks each written artifact against it."""

    def __init__(self, source_dir: Path, cfg: VerifyConfig, reporter=None):
        self.source_dir, self.cfg, self.reporter = Path(source_dir), cfg, reporter
        self._reference: Reference | None = None

    @property
    def reference(self) -> Reference:
        if self._reference is None:
            self._reference = reference_logits(self.source_dir, self.cfg)
        return self._reference

    def check(self, fmt: str, path: Path, precision: str) -> dict:
        result = verify_artifact(fmt, path, self.reference, precision_class(precision), self.cfg, self.reporter)
        if self.reporter is not None:
            self.reporter.info(
                f"verified {fmt} in {result['runtime']}: top-1 {result['top1_agreement']:.3f}, "
                f"max |logit diff| {result['max_abs_logit_diff']:.3g}"
            )
        return result
