"""`slmkit compare A B`: two results side by side, matched by model, format, backend and batch size."""

from __future__ import annotations

from pathlib import Path

from slmkit.benchmark.results import load_results


def _flatten(r: dict) -> dict[str, float | None]:
    """Every comparable number of a results document under a stable, readable key."""
    out: dict[str, float | None] = {}
    for k in ("quality_retained", "decode_speedup", "size_ratio", "params_ratio"):
        out[f"headline {k}"] = r["headline"].get(k)
    for m in r["models"]:
        for v in m.get("variants", []):
            for fig, val in (v.get("quality") or {}).items():
                out[f"{m['id']} [{v['format']}] {fig}"] = val
    for e in r["speed"]:
        for b in e.get("batches", []):
            if b.get("status") == "ok":
                out[f"{e['model']} {e['backend']} b{b['batch_size']} decode tok/s"] = b["decode_tok_s"][
                    "median"
                ]
                out[f"{e['model']} {e['backend']} b{b['batch_size']} latency p50 ms"] = b["latency_ms"]["p50"]
    return out


def compare_rows(a: dict, b: dict) -> list[tuple[str, float | None, float | None, float | None]]:
    """(figure, value in A, value in B, B / A) for the union of both documents' figures."""
    fa, fb = _flatten(a), _flatten(b)
    keys = list(fa) + [k for k in fb if k not in fa]
    rows = []
    for k in keys:
        va, vb = fa.get(k), fb.get(k)
        ratio = vb / va if va not in (None, 0) and vb is not None else None
        rows.append((k, va, vb, ratio))
    return rows


def compare(a: Path, b: Path):
    """A rich Table of A and B (results.json files, report artifacts or run dirs) side by side."""
    from rich.table import Table

    ra, rb = load_results(Path(a)), load_results(Path(b))
    t = Table(title="slmkit compare", caption=f"A = {ra['_path']}\nB = {rb['_path']}")
    for name in ("figure", "A", "B", "B / A"):
        t.add_column(name)
    for k, va, vb, ratio in compare_rows(ra, rb):
        t.add_row(k, *("—" if x is None else f"{x:.4g}" for x in (va, vb, ratio)))
    return t
