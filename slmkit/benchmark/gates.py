"""Gates: thresholds like ``quality_retained: ">=0.92"`` checked against the report's figures.

Parsing is strict (a typo in a gate must fail validation, not pass silently) and evaluation
says which figure missed and by how much, because that message is what a CI log shows.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

HEADLINE_FIGURES = ("quality_retained", "decode_speedup", "size_ratio", "params_ratio")

OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_GATE = re.compile(r"^\s*(>=|<=|==|>|<)\s*([-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Gate:
    figure: str
    op: str
    threshold: float


def parse_gate(figure: str, spec: str) -> Gate:
    """``">=0.92"`` -> Gate(figure, ">=", 0.92); raises ValueError naming the gate otherwise."""
    m = _GATE.match(str(spec))
    if not m:
        raise ValueError(
            f"gate {figure}: {spec!r} is not a comparison; expected an operator "
            f'({", ".join(OPERATORS)}) and a number, e.g. ">=0.92"'
        )
    return Gate(figure, m.group(1), float(m.group(2)))


def check_gate(gate: Gate, value: float | None, reason: str | None = None) -> dict:
    """One gate's verdict: passed, and the signed margin (value - threshold) when measured.

    A figure that could not be measured fails its gate: a CI job must not pass on a missing number.
    A ``reason`` fails it too, whatever the value (a retention figure against a teacher that cannot
    do the task means nothing).
    """
    if reason is not None:
        return {"figure": gate.figure, "op": gate.op, "threshold": gate.threshold, "value": value,
                "passed": False, "margin": None, "reason": reason}
    if value is None:
        return {
            "figure": gate.figure,
            "op": gate.op,
            "threshold": gate.threshold,
            "value": None,
            "passed": False,
            "margin": None,
        }
    passed = bool(OPERATORS[gate.op](value, gate.threshold))
    return {
        "figure": gate.figure,
        "op": gate.op,
        "threshold": gate.threshold,
        "value": value,
        "passed": passed,
        "margin": value - gate.threshold,
    }


def evaluate_gates(gates: list[Gate], figures: dict[str, float | None], reasons: dict[str, str] | None = None
                   ) -> list[dict]:
    """Check every gate (parsed at validation) against ``figures`` (headline plus the final model's)."""
    reasons = reasons or {}
    return [check_gate(gate, figures.get(gate.figure), reasons.get(gate.figure)) for gate in gates]


def failure_lines(verdicts: list[dict]) -> list[str]:
    """A line per missed gate, e.g. ``decode_speedup = 3.1, needs >=4 (missed by 0.9)``."""
    lines = []
    for v in verdicts:
        if v["passed"]:
            continue
        need = f"needs {v['op']}{v['threshold']:g}"
        if v.get("reason"):
            lines.append(f"{v['figure']} fails: {v['reason']}")
        elif v["value"] is None:
            lines.append(f"{v['figure']} was not measured, {need}")
        else:
            lines.append(f"{v['figure']} = {v['value']:.4g}, {need} (missed by {abs(v['margin']):.4g})")
    return lines


def failure_message(failed: list[str]) -> str:
    """The one message a run that missed gates exits with: a header, then each missed gate once."""
    return "benchmark gate(s) failed:\n" + "\n".join(f"  - {line}" for line in failed)
