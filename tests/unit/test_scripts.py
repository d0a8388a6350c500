"""Every benchmark script ends with one JSON object on one line (docs/performance.md relies on it)."""

import ast
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[2] / "scripts").glob("bench_*.py"))


def _json_prints(tree: ast.AST) -> list[ast.Call]:
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Call) and getattr(arg.func, "attr", None) == "dumps":
                calls.append(arg)
    return calls


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bench_script_prints_its_figures_as_one_json_line(script):
    dumps = _json_prints(ast.parse(script.read_text()))
    assert dumps, f"{script.name} prints no json.dumps(...) result"
    for call in dumps:
        assert not any(k.arg == "indent" for k in call.keywords), f"{script.name}: multi-line JSON (indent=...)"
