"""`slmkit compare A B`: two results side by side, matched by model, format, backend and batch size.

Each figure says whether A and B differ by more than their noise: quality figures through a
bootstrap of the difference over eval examples (paired when both runs scored the same examples,
from the per-example values results.json keeps), or through their saved intervals; speed figures
through their min-max spreads over the timed requests. The same rows go to the terminal (a rich
table) and to a self-contained HTML page styled like report.html.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slmkit.benchmark.results import load_results


@dataclass
class Figure:
    value: float | None
    ci: list[float] | None = None  # 95% interval of a quality figure
    per_example: dict | None = None  # {num, den, ids} of a quality figure
    kind: str = "mean"
    spread: list[float] | None = None  # [min, max] of a timed figure


def _flatten(r: dict) -> dict[str, Figure]:
    """Every comparable number of a results document under a stable, readable key."""
    from slmkit.benchmark.quality import figure_kind

    out: dict[str, Figure] = {}
    h = r["headline"]
    for k in ("quality_retained", "decode_speedup", "size_ratio", "params_ratio"):
        out[f"headline {k}"] = Figure(h.get(k), h.get(f"{k}_ci"))
    for m in r["models"]:
        for v in m.get("variants", []):
            cis, pes = v.get("quality_ci") or {}, v.get("per_example") or {}
            for fig, val in (v.get("quality") or {}).items():
                out[f"{m['id']} [{v['format']}] {fig}"] = Figure(val, cis.get(fig), pes.get(fig), figure_kind(fig))
    for e in r["speed"]:
        for b in e.get("batches", []):
            if b.get("status") == "ok":
                tok, lat = b["decode_tok_s"], b["latency_ms"]
                key = f"{e['model']} {e['backend']} b{b['batch_size']}"
                out[f"{key} decode tok/s"] = Figure(tok["median"], spread=[tok["min"], tok["max"]])
                out[f"{key} latency p50 ms"] = Figure(lat["p50"], spread=[lat["min"], lat["max"]])
    return out


def beyond_noise(a: Figure, b: Figure) -> bool | None:
    """True when A and B differ by more than their noise, False when not, None when it cannot be told."""
    from slmkit.benchmark.stats import compare_saved

    if a.value is None or b.value is None:
        return None
    if (a.per_example and b.per_example) or (a.ci and b.ci):
        saved = [{"value": f.value, "ci": f.ci, "per_example": f.per_example} for f in (a, b)]
        return compare_saved(saved[0], saved[1], a.kind).significant
    if a.spread and b.spread:  # timed figures: disjoint ranges over the repeats
        return a.spread[1] < b.spread[0] or b.spread[1] < a.spread[0]
    return None


def compare_rows(a: dict, b: dict) -> list[tuple[str, float | None, float | None, float | None, bool | None]]:
    """(figure, value in A, value in B, B / A, beyond noise) for the union of both documents' figures."""
    fa, fb = _flatten(a), _flatten(b)
    rows = []
    for k in list(fa) + [k for k in fb if k not in fa]:
        va, vb = fa.get(k, Figure(None)), fb.get(k, Figure(None))
        ratio = vb.value / va.value if va.value not in (None, 0) and vb.value is not None else None
        rows.append((k, va.value, vb.value, ratio, beyond_noise(va, vb)))
    return rows


_VERDICT = {True: "larger than noise", False: "within noise", None: "—"}


def compare(a: Path, b: Path):
    """A rich Table of A and B (results.json files, report artifacts or run dirs) side by side."""
    from rich.table import Table

    ra, rb = load_results(Path(a)), load_results(Path(b))
    t = Table(title="slmkit compare", caption=f"A = {ra['_path']}\nB = {rb['_path']}")
    for name in ("figure", "A", "B", "B / A", "difference"):
        t.add_column(name)
    for k, va, vb, ratio, beyond in compare_rows(ra, rb):
        t.add_row(k, *("—" if x is None else f"{x:.4g}" for x in (va, vb, ratio)), _VERDICT[beyond])
    return t


# ---------------------------------------------------------------- the HTML page


def _verdict_cell(va, vb, beyond):
    """Colour and words: a screen reader and a printout both say which rows moved beyond the noise. The
    colour says "moved", not "better": higher is better for some figures (tok/s), worse for others (ms)."""
    from slmkit.benchmark.report import C

    if beyond is True:
        return C(f"{'▲' if vb > va else '▼'} {_VERDICT[True]}", cls="moved")
    return C("within noise" if beyond is False else "cannot tell", cls="" if beyond is False else "skip")


def compare_table(rows) -> object:
    from slmkit.benchmark.report import DASH, C, Table, fmt_ratio, sig

    t = Table([C(h) for h in ("figure", "A", "B", "B / A", "difference")], empty="no figures in either run")
    for k, va, vb, ratio, beyond in rows:
        t.add([C(k), C(sig(va), cls="num"), C(sig(vb), cls="num"),
               C(fmt_ratio(ratio, 3) if ratio is not None else DASH, cls="num"), _verdict_cell(va, vb, beyond)],
              "beyond" if beyond else "")
    return t


def _run_summary(label: str, r: dict) -> list[str]:
    from slmkit.benchmark.report import _esc, html_headline

    return [f"<h2>{label}: {_esc(r.get('recipe') or '')} <small>{_esc(r['_path'])}</small></h2>", *html_headline(r)]


def compare_html(ra: dict, rb: dict) -> str:
    """The compare page: both headlines, the rows that moved beyond their noise, then every row."""
    from slmkit.benchmark.report import _esc, html_page, html_table

    rows = compare_rows(ra, rb)
    moved = [row for row in rows if row[4] is True]
    told = sum(row[4] is not None for row in rows)
    summary = (f"{len(moved)} of {told} figures that can be told apart differ by more than their noise "
               f"({len(rows)} figures in all; B / A above 1 means B is higher).")
    body = ["<header><h1>Benchmark compare: A vs B</h1></header>", *_run_summary("A", ra),
            *_run_summary("B", rb), f'<p class="summary{" moved" if moved else ""}" role="status">{_esc(summary)}</p>',
            "<h2>Larger than noise</h2>", html_table(compare_table(moved)),
            "<h2>Every figure</h2>", html_table(compare_table(rows))]
    return html_page("slmkit compare", body)


def write_compare(a: Path, b: Path, out: Path) -> Path:
    """Write the compare page of A and B (results.json files, report artifacts or run dirs) to ``out``."""
    ra, rb = load_results(Path(a)), load_results(Path(b))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(compare_html(ra, rb))
    return out
