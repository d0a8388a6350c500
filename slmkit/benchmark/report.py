"""Render results.json as report.md, a self-contained report.html (plots embedded as base64 PNG)
and a rich table for the terminal. Rendering reads only the results document (and PNGs saved
beside it), so `slmkit report` re-renders without measuring anything.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from slmkit.benchmark.results import load_results

Table = tuple[list[str], list[list[str]]]


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    if isinstance(x, list) and len(x) == 2 and all(isinstance(v, (int, float)) for v in x):
        return f"[{x[0]:.3g}, {x[1]:.3g}]"  # a 95% interval
    return str(x)


def _with_ci(value, ci) -> str:
    """``value [low, high]``: the 95% interval says how far the figure can be trusted."""
    return _fmt(value) if not ci else f"{_fmt(value)} [{ci[0]:.3g}, {ci[1]:.3g}]"


def _spread(stat: dict | None) -> str:
    """``median (min–max)``: the spread tells whether two numbers differ beyond the noise."""
    if not stat:
        return "—"
    return f"{stat['median']:.4g} ({stat['min']:.3g}–{stat['max']:.3g})"


# ---------------------------------------------------------------- tables as plain rows


def headline_table(r: dict) -> Table:
    # the headline's own keys, in its order (scorer benchmarks have scoring_speedup, not decode_speedup)
    return ["figure", "value"], [[k, _fmt(v)] for k, v in r["headline"].items()]


def quality_table(r: dict) -> Table:
    figures = sorted(
        {f for m in r["models"] for v in m.get("variants", []) for f in (v.get("quality") or {})}
    )
    headers = ["model", "format", "backend", "params", "size MB", *figures, "quality_retained", "notes"]
    rows = []
    for m in r["models"]:
        if m.get("status") == "failed":
            rows.append([m["id"], "—", "—", "—", "—", *["—"] * len(figures), "—", f"FAILED: {m['reason']}"])
        for v in m.get("variants", []):
            q, cis = v.get("quality") or {}, v.get("quality_ci") or {}
            notes = "; ".join([f"{k} skipped: {why}" for k, why in (v.get("quality_skipped") or {}).items()]
                              + list(v.get("notes") or []))
            rows.append(
                [
                    m["id"],
                    v["format"],
                    v.get("quality_backend") or "—",
                    _fmt(v.get("params")),
                    _fmt((v.get("size_bytes") or 0) / 2**20),
                    *[_with_ci(q.get(f), cis.get(f)) for f in figures],
                    _with_ci(v.get("quality_retained"), _retained_ci(r, v)),
                    notes,
                ]
            )
    return headers, rows


def _retained_ci(r: dict, v: dict):
    p = r.get("primary_metric")
    above = p in (r.get("baselines") or {}) and (v.get("above_baseline") or {}).get(p) is not None
    return (v.get("above_baseline_ci" if above else "retained_ci") or {}).get(p)


def baseline_table(r: dict) -> Table:
    """Each figure's chance or trivial baseline: what a model that cannot do the task would score."""
    rows = [[f, _with_ci(b.get("value"), b.get("ci")), b.get("what", "")] for f, b in (r.get("baselines") or {}).items()]
    return ["figure", "baseline [95% CI]", "what scores it"], rows


def speed_table(r: dict) -> Table:
    headers = [
        "model",
        "backend",
        "batch",
        "status",
        "decode tok/s",
        "prefill tok/s",
        "TTFT ms",
        "latency p50/p95/p99 ms",
        "peak RSS MB",
        "load s",
        "decode speedup vs teacher fp32",
        "notes",
    ]
    rows = []
    for e in r["speed"]:
        if e.get("status") != "ok" and not e.get("batches"):
            rows.append(
                [e["model"], e["backend"], "—", e["status"].upper(), *["—"] * 7, e.get("reason") or ""]
            )
            continue
        for b in e["batches"]:
            if b["status"] != "ok":
                rows.append(
                    [
                        e["model"],
                        e["backend"],
                        str(b["batch_size"]),
                        b["status"].upper(),
                        *["—"] * 7,
                        b.get("reason") or "",
                    ]
                )
                continue
            lat = b["latency_ms"]
            ratio = ((b.get("ratios") or {}).get("vs_teacher_baseline") or {}).get("decode_speedup")
            rows.append(
                [
                    e["model"],
                    e["backend"],
                    str(b["batch_size"]),
                    "ok",
                    _spread(b["decode_tok_s"]),
                    _spread(b["prefill_tok_s"]),
                    _spread(b["ttft_ms"]),
                    f"{lat['p50']:.4g} / {lat['p95']:.4g} / {lat['p99']:.4g} (n={lat['n']})",
                    _fmt(e.get("peak_rss_mb")),
                    _fmt(e.get("load_s"), 3),
                    _fmt(ratio, 3),
                    "",
                ]
            )
    return headers, rows


def concurrency_table(r: dict) -> Table:
    headers = [
        "model",
        "backend",
        "requests",
        "status",
        "throughput tok/s",
        "latency p50 ms",
        "gain vs teacher fp32",
    ]
    rows = []
    for e in r["speed"]:
        c = e.get("concurrency")
        if not c:
            continue
        gain = ((e.get("ratios") or {}).get("vs_teacher_baseline") or {}).get("throughput_gain")
        ok = c["status"] == "ok"
        rows.append(
            [
                e["model"],
                e["backend"],
                str(c["requests"]),
                c["status"] if ok else f"{c['status']}: {c['reason']}",
                _spread(c.get("throughput_tok_s")) if ok else "—",
                _fmt(c["latency_ms"]["p50"]) if ok else "—",
                _fmt(gain, 3),
            ]
        )
    return headers, rows


def gates_table(r: dict) -> Table:
    rows = [
        [
            g["figure"],
            f"{g['op']}{g['threshold']:g}",
            _fmt(g["value"]),
            "pass" if g["passed"] else "FAIL",
            _fmt(g["margin"]),
        ]
        for g in r.get("gates", [])
    ]
    return ["figure", "needs", "value", "verdict", "margin"], rows


def hardware_table(r: dict) -> Table:
    hw = r.get("hardware") or {}
    cpu = hw.get("cpu") or {}
    gpu = hw.get("gpu") or {}
    libs = ", ".join(f"{k} {v}" for k, v in (hw.get("libraries") or {}).items() if v)
    rows = [
        [
            "CPU",
            f"{cpu.get('model')} ({cpu.get('physical_cores')} cores, {cpu.get('logical_cores')} threads, "
            f"{cpu.get('memory_gb')} GB)",
        ],
        ["CPU flags", " ".join(cpu.get("flags") or []) or "—"],
        ["GPU", f"{gpu.get('name')} ({gpu.get('memory_gb')} GB)" if gpu else "none"],
        ["torch threads", _fmt(hw.get("torch_threads"))],
        ["libraries", libs],
        ["OS", hw.get("os") or "—"],
    ]
    return ["", ""], rows


def scoring_speed_table(r: dict) -> Table:
    """Scorers (ranking / classification): items/s per batch size and per-context latency."""
    rows = r.get("scoring_speed") or []
    figures = list(dict.fromkeys(k for e in rows for k in e if k.startswith(("items_per_s", "context_latency"))))
    return (["model", "format", "backend", *figures],
            [[e["model"], e["format"], e["backend"], *[_fmt(e.get(f)) for f in figures]] for e in rows])


SECTIONS = [
    ("Headline", headline_table),
    ("Gates", gates_table),
    ("Quality (95% intervals in brackets)", quality_table),
    ("Baselines", baseline_table),
    ("Speed", speed_table),
    ("Concurrent requests", concurrency_table),
    ("Machine", hardware_table),
]
SCORING_SECTIONS = [  # ranking / classification recipes: no decoding, so scoring speed instead
    ("Headline", headline_table),
    ("Gates", gates_table),
    ("Quality (95% intervals in brackets)", quality_table),
    ("Baselines", baseline_table),
    ("Scoring speed", scoring_speed_table),
    ("Machine", hardware_table),
]


def sections(r: dict) -> list:
    return SCORING_SECTIONS if "scoring_speed" in r else SECTIONS


# ---------------------------------------------------------------- plots


def _points(r: dict, b0: int) -> list[dict]:
    """One point per (model variant, backend) measured at batch b0: latency p50 and primary figure."""
    pm = r["primary_metric"]
    variants = {(m["id"], v["format"]): v for m in r["models"] for v in m.get("variants", [])}
    pts = []
    for e in r["speed"]:
        b = next((b for b in e.get("batches", []) if b["batch_size"] == b0 and b["status"] == "ok"), None)
        v = variants.get((e["model"], e["format"]))
        q = ((v or {}).get("quality") or {}).get(pm)
        if b and q is not None:
            pts.append(
                {
                    "label": f"{e['model']} · {e['backend']}",
                    "teacher": e["model"] == r["teacher"],
                    "latency": b["latency_ms"]["p50"],
                    "quality": q,
                    "size_mb": (v.get("size_bytes") or 0) / 2**20,
                    "retained": v.get("quality_retained"),
                }
            )
    return pts


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool = True) -> list[int]:
    """Indices of points no other point beats on both latency (lower) and quality, by latency."""
    sign = 1 if higher_is_better else -1
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -sign * points[i][1]))
    front, best = [], None
    for i in order:
        q = sign * points[i][1]
        if best is None or q > best:
            front.append(i)
            best = q
    return front


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _scatter(ax, pts: list[dict], x: str, y: str) -> None:
    for p in pts:
        marker, size = ("*", 220) if p["teacher"] else ("o", 50)
        ax.scatter(
            p[x], p[y], marker=marker, s=size, color="crimson" if p["teacher"] else "steelblue", zorder=3
        )
        ax.annotate(
            ("TEACHER: " if p["teacher"] else "") + p["label"],
            (p[x], p[y]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.grid(alpha=0.3)


def pareto_png(r: dict) -> bytes | None:
    """Quality (primary metric) against request latency at the first batch size; teacher starred."""
    from matplotlib.figure import Figure

    b0 = r["settings"]["speed"]["batch_sizes"][0]
    pts = _points(r, b0)
    if not pts:
        return None
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    _scatter(ax, pts, "latency", "quality")
    front = pareto_front([(p["latency"], p["quality"]) for p in pts], r.get("primary_higher_is_better", True))
    ax.plot(
        [pts[i]["latency"] for i in front],
        [pts[i]["quality"] for i in front],
        "--",
        color="gray",
        label="Pareto front",
    )
    better = "higher" if r.get("primary_higher_is_better", True) else "lower"
    ax.set_xlabel(f"request latency p50 (ms), batch {b0}, {r['settings']['speed']['new_tokens']} new tokens")
    ax.set_ylabel(f"{r['primary_metric']} ({better} is better)")
    ax.set_title("Quality vs latency")
    ax.legend(loc="best", fontsize=8)
    return _png(fig)


def size_quality_png(r: dict) -> bytes | None:
    from matplotlib.figure import Figure

    pts = [p for p in _points(r, r["settings"]["speed"]["batch_sizes"][0]) if p["retained"] is not None]
    if not pts:
        return None
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    _scatter(ax, pts, "size_mb", "retained")
    ax.set_xscale("log")
    ax.set_xlabel("weights on disk (MB, log scale)")
    ax.set_ylabel(f"quality retained ({r['primary_metric']}, teacher = 1)")
    ax.set_title("Size vs quality")
    return _png(fig)


# ---------------------------------------------------------------- documents


def _md_table(t: Table) -> str:
    headers, rows = t
    if not rows:
        return "_none_\n"
    esc = [[c.replace("|", "\\|") for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in esc]) + "\n"


def render_markdown(r: dict, images: dict[str, str]) -> str:
    parts = [
        f"# Benchmark: {r.get('recipe') or 'slmkit'}\n",
        f"Primary metric `{r['primary_metric']}`; teacher `{r['teacher']}`; final model "
        f"`{r.get('final_model')}`. Figures are medians of {r['settings']['speed']['repeats']} timed "
        "requests, spread (min–max) in brackets. Ratios > 1 mean better than the teacher.\n",
    ]
    for title, fn in sections(r):
        parts += [f"## {title}\n", _md_table(fn(r))]
    parts += [f"![{name}]({fname})\n" for name, fname in images.items()]
    return "\n".join(parts)


def _html_table(t: Table) -> str:
    headers, rows = t
    if not rows:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(r: dict, pngs: dict[str, bytes]) -> str:
    """One file, no external resources: tables and base64-embedded PNG plots."""
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:left}th{background:#f3f3f3}"
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>slmkit benchmark</title>"
        f"<style>{style}</style></head><body>"
        f"<h1>Benchmark: {html.escape(str(r.get('recipe') or 'slmkit'))}</h1>"
    ]
    for title, fn in sections(r):
        parts.append(f"<h2>{html.escape(title)}</h2>{_html_table(fn(r))}")
    for name, data in pngs.items():
        b64 = base64.b64encode(data).decode("ascii")
        parts.append(
            f"<h2>{html.escape(name)}</h2><img alt='{html.escape(name)}' src='data:image/png;base64,{b64}'>"
        )
    return "\n".join(parts + ["</body></html>"])


def rich_table(r: dict):
    """A compact speed table (medians only) with the headline in its caption, for the terminal."""
    from rich.table import Table as RichTable

    h = r["headline"]
    t = RichTable(
        title="slmkit benchmark",
        caption=f"final {h['model']}: "
        + ", ".join(f"{k} {_fmt(v)}" for k, v in h.items() if k.endswith(("retained", "speedup", "ratio"))),
    )
    if "scoring_speed" in r:
        return _rich_rows(t, *scoring_speed_table(r))
    for name in (
        "model",
        "backend",
        "batch",
        "decode tok/s",
        "TTFT ms",
        "p50 ms",
        "RSS MB",
        "speedup",
        "quality",
    ):
        t.add_column(name, overflow="fold")
    quality = {
        (m["id"], v["format"]): v.get("quality_retained") for m in r["models"] for v in m.get("variants", [])
    }
    for e in r["speed"]:
        q = _fmt(quality.get((e["model"], e["format"])), 3)
        rows = e.get("batches") or [{"batch_size": "—", "status": e["status"], "reason": e.get("reason")}]
        for b in rows:
            if b["status"] != "ok":
                t.add_row(
                    e["model"],
                    e["backend"],
                    str(b["batch_size"]),
                    f"{b['status']}: {b.get('reason')}",
                    "",
                    "",
                    "",
                    "",
                    q,
                    style="yellow",
                )
                continue
            ratio = ((b.get("ratios") or {}).get("vs_teacher_baseline") or {}).get("decode_speedup")
            t.add_row(
                e["model"],
                e["backend"],
                str(b["batch_size"]),
                _fmt(b["decode_tok_s"]["median"]),
                _fmt(b["ttft_ms"]["median"]),
                _fmt(b["latency_ms"]["p50"]),
                _fmt(e.get("peak_rss_mb")),
                _fmt(ratio, 3),
                q,
            )
    return t


def _rich_rows(t, headers: list[str], rows: list[list[str]]):
    for name in headers:
        t.add_column(name, overflow="fold")
    for row in rows:
        t.add_row(*row)
    return t


def write_report(r: dict, out_dir: Path) -> Path:
    """results.json, report.md, report.html and the plot PNGs into out_dir; returns report.html."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {k: v for k, v in r.items() if not k.startswith("_")}
    (out_dir / "results.json").write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    pngs = {"Quality vs latency": pareto_png(r), "Size vs quality": size_quality_png(r)}
    names = {"Quality vs latency": "pareto.png", "Size vs quality": "size_quality.png"}
    for m in r["models"]:
        if m.get("layer_importance_png") and (out_dir / m["layer_importance_png"]).is_file():
            key = f"Layer importance ({m['id']})"
            pngs[key], names[key] = (
                (out_dir / m["layer_importance_png"]).read_bytes(),
                m["layer_importance_png"],
            )
    pngs = {k: v for k, v in pngs.items() if v}
    for key, data in pngs.items():
        if not (out_dir / names[key]).is_file() or (out_dir / names[key]).read_bytes() != data:
            (out_dir / names[key]).write_bytes(data)
    (out_dir / "report.md").write_text(render_markdown(r, {k: names[k] for k in pngs}))
    (out_dir / "report.html").write_text(render_html(r, pngs))
    return out_dir / "report.html"


def render_report(run_or_report_dir: Path, out_dir: Path | None = None) -> Path:
    """Re-render report.md / report.html from a saved results.json, measuring nothing.

    ``run_or_report_dir`` is a report artifact, a run dir (its newest benchmark artifact) or the file
    itself; output goes beside results.json unless ``out_dir`` is given.
    """
    r = load_results(Path(run_or_report_dir))
    src = Path(r["_path"]).parent
    target = Path(out_dir) if out_dir else src
    if target != src:  # plots saved beside the source (layer importance) travel with the report
        target.mkdir(parents=True, exist_ok=True)
        for m in r["models"]:
            name = m.get("layer_importance_png")
            if name and (src / name).is_file():
                (target / name).write_bytes((src / name).read_bytes())
    return write_report(r, target)
