"""Render results.json for people: report.md, a self-contained report.html (plots embedded as
base64 PNG) and a rich table for the terminal.

The page answers first: one sentence (quality kept, speed, size of the final model against the
teacher), then the gates, then the evidence (plots, tables, machine). Numbers are formatted here
only (134.5M parameters, 77 MB, 4.3x); results.json keeps the machine-readable values. Rendering
reads only the results document (and PNGs saved beside it), so `slmkit report` re-renders
without measuring anything, and the same document gives the same bytes.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from slmkit.benchmark.results import load_results

DASH = "—"

# ---------------------------------------------------------------- numbers for people


def sig(x: float | None, digits: int = 3) -> str:
    """``x`` to at most ``digits`` significant figures, never in exponent notation, thousands separated."""
    if x is None:
        return DASH
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    rounded = round(x, digits - 1 - mag)
    if rounded != 0 and math.floor(math.log10(abs(rounded))) > mag:  # 9.996 rounds up to 10.0: one decimal less
        mag += 1
    decimals = max(digits - 1 - mag, 0)
    out = f"{rounded:,.{decimals}f}"
    if "." in out:  # 0.310 -> 0.31, 5.00 -> 5: trailing zeros read as precision the figure lacks
        out = out.rstrip("0").rstrip(".")
    return "0" if float(out.replace(",", "")) == 0 else out


def fmt_count(n: float | None) -> str:
    """Parameter counts: 134515008 -> ``134.5M``."""
    if n is None:
        return DASH
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(int(n))


def fmt_bytes(n: float | None) -> str:
    """Sizes in decimal units (1 MB = 10^6 bytes), three significant figures: ``538 MB``."""
    if n is None:
        return DASH
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{sig(n / scale)} {unit}"
    return f"{int(n)} B"


def fmt_mb(mb: float | None) -> str:
    return DASH if mb is None else fmt_bytes(mb * 1e6)


def fmt_ratio(x: float | None, digits: int = 2) -> str:
    """Speed-ups and ratios: 4.255 -> ``4.3x``."""
    return DASH if x is None else f"{sig(x, digits)}x"


def fmt_fraction(x: float | None) -> str:
    """A ratio below 1 as a fraction a reader pictures: 0.143 -> ``1/7``, 0.6355 -> ``1/1.6``."""
    if x is None or x <= 0:
        return DASH
    if x >= 1:
        return fmt_ratio(x)
    inverse = 1 / x
    text = str(round(inverse)) if inverse >= 10 else sig(inverse, 2)
    return "1/" + (text[:-2] if text.endswith(".0") else text)


def fmt_interval(ci, digits: int = 3) -> str:
    """A 95% interval as ``[low, high]``."""
    return "" if not ci else f"[{sig(ci[0], digits)}, {sig(ci[1], digits)}]"


def fmt_range(ci, digits: int = 2) -> str:
    """An interval inside a sentence: ``0.88–0.94``."""
    return f"{sig(ci[0], digits)}–{sig(ci[1], digits)}"


def fmt_signed(x: float | None) -> str:
    return DASH if x is None else ("+" if x > 0 else "") + sig(x)


# ---------------------------------------------------------------- cells and tables


@dataclass(frozen=True)
class Cell:
    """One table cell: text for Markdown and the terminal, plus how HTML dresses it."""

    text: str
    note: str = ""  # an interval or a spread: smaller in HTML, after the text in Markdown
    cls: str = ""  # CSS class: pass, fail, skip, num
    link: str = ""  # anchor of a definition on the same page
    fns: tuple[int, ...] = ()  # footnote numbers
    span: int = 1  # columns it covers: a skipped row's one reason instead of a row of dashes

    def plain(self) -> str:
        marks = "".join(f" [{n}]" for n in self.fns)
        return f"{self.text} {self.note}".strip() + marks


def C(text, note: str = "", cls: str = "", link: str = "", fns: tuple[int, ...] = (), span: int = 1) -> Cell:
    return Cell(DASH if text is None or text == "" else str(text), note, cls, link, fns, span)


@dataclass
class Table:
    headers: list[Cell]
    rows: list[list[Cell]] = field(default_factory=list)
    row_classes: list[str] = field(default_factory=list)  # per row: teacher, final, failed, skipped
    empty: str = "none"

    def add(self, cells: list[Cell], cls: str = "") -> None:
        self.rows.append(cells)
        self.row_classes.append(cls)


def _headers(*names) -> list[Cell]:
    return [n if isinstance(n, Cell) else Cell(n) for n in names]


# ---------------------------------------------------------------- what figures mean

DOCS = "docs/benchmark.md"
# figure -> (anchor in docs/benchmark.md, one-line definition); the report repeats the line so a
# reader without the repository still knows what a number means
DEFINITIONS = {
    "quality_retained": ("quality-retained", "the share of the teacher's primary figure the model keeps: "
                         "(model - baseline) / (teacher - baseline) where the figure has a baseline (0 = no "
                         "better than the trivial answer, 1 = as good as the teacher), else model / teacher "
                         "(teacher / model for lower-is-better figures)"),
    "decode_speedup": ("decode-speedup", "decode tokens/s over the teacher's on PyTorch fp32, same batch size"),
    "scoring_speedup": ("scoring-speedup", "items scored per second (20 candidates per context) over the "
                        "teacher's on PyTorch"),
    "size_ratio": ("size-ratio", "weights on disk over the teacher's (tokenizer and config files excluded)"),
    "params_ratio": ("params-ratio", "parameters over the teacher's, read from the weight files"),
    "baseline": ("baselines", "what a model with no skill scores on the figure: a trivial answer, a unigram "
                 "model or a random order"),
    "perplexity": ("perplexity", "exp of the mean negative log-likelihood of the eval answer tokens"),
    "general_perplexity": ("general-perplexity", "perplexity on general English prose no stage trained on"),
    "top1_agreement": ("teacher-agreement", "how often the model's most likely next token is the teacher's, "
                       "on the teacher's own answers"),
    "teacher_kl": ("teacher-agreement", "KL(teacher || model) per answer token, on the teacher's own answers"),
    "exact_match": ("task", "generated answer equals the reference, after normalisation"),
    "contains": ("task", "generated answer contains the reference"),
    "rouge_l": ("task", "ROUGE-L F1 of the generated answer against the reference"),
    "answer_likelihood": ("answer-likelihood", "how likely the teacher finds the model's greedy answer, "
                          "relative to its own (1 = as likely as its own, capped at 1)"),
    "lm_eval_mean": ("lm-eval", "mean of the lm-evaluation-harness task scores"),
}
SCORING_DEFINITION = ("scoring-figures", "a ranking / classification figure, defined in docs/predictive.md (Metrics)")


def definition(figure: str) -> tuple[str, str]:
    """(docs anchor, one line) of a figure; scorer figures point to the predictive docs."""
    if figure in DEFINITIONS:
        return DEFINITIONS[figure]
    if figure.startswith("lm_eval:"):
        return DEFINITIONS["lm_eval_mean"][0], "an lm-evaluation-harness task score"
    return SCORING_DEFINITION


def def_anchor(figure: str) -> str:
    return "def-" + re.sub(r"[^a-z0-9]+", "-", figure.lower()).strip("-")


def _arrow(r: dict, figure: str) -> str:
    """↑ or ↓ beside a figure's name: its direction from the metric registry (unknown ones: higher)."""
    from slmkit.benchmark.quality import METRICS

    if figure == r.get("primary_metric"):
        return "↑" if r.get("primary_higher_is_better", True) else "↓"
    directions = {f: up for m in METRICS.values() for f, up in m.figures.items()}
    return "↑" if directions.get(figure, True) else "↓"


# ---------------------------------------------------------------- reasons and install hints

_HINT = re.compile(r"\s*\((pip install [^()]+)\)")


def split_hint(reason: str) -> tuple[str, str | None]:
    """``"llama-cpp-python is not installed (pip install 'slmkit[llamacpp]')"`` -> the short reason and
    the command, so the command is printed once in a footnote instead of on every row."""
    m = _HINT.search(reason or "")
    if not m:
        return reason or "", None
    return (reason[: m.start()] + reason[m.end():]).strip(), m.group(1)


def _all_reasons(r: dict) -> list[str]:
    out = []
    for m in r.get("models", []):
        out += [m.get("reason") or ""]
        for v in m.get("variants", []):
            out += list((v.get("quality_skipped") or {}).values())
    for e in r.get("speed", []):
        out += [e.get("reason") or "", (e.get("concurrency") or {}).get("reason") or ""]
        out += [b.get("reason") or "" for b in e.get("batches", [])]
    return out


def install_hints(r: dict) -> list[str]:
    """Every distinct install command named by a reason, in document order: footnote 1, 2, ..."""
    return list(dict.fromkeys(h for h in (split_hint(x)[1] for x in _all_reasons(r)) if h))


def reason_cell(reason: str | None, hints: list[str], prefix: str = "", cls: str = "skip", span: int = 1) -> Cell:
    short, hint = split_hint(reason or "")
    return C(f"{prefix}{short}" if short else prefix.rstrip(": ") or DASH, cls=cls,
             fns=(hints.index(hint) + 1,) if hint in hints else (), span=span)


def skipped_groups(skipped: dict[str, str]) -> list[tuple[list[str], str]]:
    """Metrics skipped for the same reason, grouped: one reason per row, not one per metric."""
    groups: dict[str, list[str]] = {}
    for metric, why in skipped.items():
        groups.setdefault(why, []).append(metric)
    return [(metrics, why) for why, metrics in groups.items()]


def _notes_cell(v: dict, hints: list[str], span: int = 1) -> Cell:
    groups = skipped_groups(v.get("quality_skipped") or {})
    nothing = not any(x is not None for x in (v.get("quality") or {}).values())
    parts, fns = [], []
    for metrics, why in groups:
        short, hint = split_hint(why)
        parts.append(f"not measured: {short}" if nothing and len(groups) == 1 else f"{', '.join(metrics)}: {short}")
        if hint in hints and hints.index(hint) + 1 not in fns:
            fns.append(hints.index(hint) + 1)
    parts += list(v.get("notes") or [])
    return C("; ".join(parts), cls="skip wide" if groups else "wide", fns=tuple(fns), span=span) if parts else C("")


# ---------------------------------------------------------------- the answer first


FORMAT_NAMES = {"hf": "safetensors", "onnx": "ONNX", "onnx_int8": "ONNX int8", "gguf": "GGUF"}


def _variant(r: dict, model_id: str | None, fmt: str | None) -> dict | None:
    m = next((m for m in r.get("models", []) if m["id"] == model_id), None)
    return next((v for v in (m or {}).get("variants", []) if v["format"] == fmt), None)


def _teacher_variant(r: dict) -> dict | None:
    return _variant(r, r.get("teacher"), "hf")


def model_name(r: dict, model_id: str) -> str:
    recipe = r.get("recipe")
    return model_id if not recipe or model_id.startswith(f"{recipe}/") else f"{recipe}/{model_id}"


def _variant_desc(r: dict, h: dict) -> str:
    """``ONNX, 4.9 bits/param``: results.json does not record the precision, its bytes per parameter do."""
    fmt = h.get("variant_format")
    v = _variant(r, h.get("model"), fmt) or {}
    name = FORMAT_NAMES.get(fmt, fmt or "no model files")
    if v.get("size_bytes") and v.get("params"):
        return f"{name}, {sig(8 * v['size_bytes'] / v['params'], 2)} bits/param"
    return name


Segment = tuple[str, str]  # (text, anchor of its definition or "")


def _quality_claim(r: dict, h: dict) -> list[Segment]:
    q, p = h.get("quality_retained"), r.get("primary_metric", "quality")
    if q is None:
        return [(f"{p} not measured", def_anchor(p))]
    out = [(f"{sig(q, 2)} of the teacher's ", ""), (p, def_anchor(p))]
    if h.get("quality_retained_basis") == "above_baseline":
        out += [(" ", ""), ("above its baseline", def_anchor("quality_retained"))]
    elif not r.get("primary_higher_is_better", True):
        out += [(" (teacher / model)", "")]
    ci = h.get("quality_retained_ci")
    return out + ([(f" (95% CI {fmt_range(ci)})", "")] if ci else [])


def _speed_claim(h: dict) -> list[Segment]:
    key, what = ("scoring_speedup", "scoring") if "scoring_speedup" in h else ("decode_speedup", "decode")
    s = h.get(key)
    if s is None:
        return []
    text = f"{fmt_ratio(s)} faster {what}" if s >= 1 else f"{fmt_ratio(1 / s)} slower {what}"
    return [(text, def_anchor(key))]


def _size_claim(h: dict) -> list[Segment]:
    s = h.get("size_ratio")
    if s is None:
        return []
    return [(f"{fmt_fraction(s)} the size" if s < 1 else f"{fmt_ratio(s)} the size", def_anchor("size_ratio"))]


def headline_segments(r: dict) -> list[Segment]:
    """The first line: which model, how much of the teacher's quality it keeps, how much faster and
    smaller it is. With the teacher unable to do the task the retention claim is left out (the
    note takes the first line's place)."""
    h = r.get("headline") or {}
    if not h.get("model"):
        return [("No final model: this run has no model artifact to set against the teacher.", "")]
    claims = [] if h.get("quality_retained_note") else [_quality_claim(r, h)]
    claims += [c for c in (_speed_claim(h), _size_claim(h)) if c]
    out: list[Segment] = [(f"{model_name(r, h['model'])} ({_variant_desc(r, h)}): ", "")]
    for i, claim in enumerate(claims):
        out += ([(", ", "")] if i else []) + claim
    if h.get("quality_retained_note"):
        out.append(("; no quality retention figure is given (see the warning above)", ""))
    return out


def headline_note(r: dict) -> str | None:
    note = (r.get("headline") or {}).get("quality_retained_note")
    return None if not note else note[0].upper() + note[1:]


def headline_text(r: dict) -> str:
    """The first line as plain text (terminal, tests); the teacher-cannot note comes first."""
    sentence = "".join(t for t, _ in headline_segments(r)) + "."
    note = headline_note(r)
    return f"WARNING: {note}.\n{sentence}" if note else sentence


def key_figures_table(r: dict) -> Table:
    """The headline's figures with their evidence: intervals, absolute sizes, what they compare."""
    h, t = r.get("headline") or {}, _teacher_variant(r) or {}
    v = _variant(r, h.get("model"), h.get("variant_format")) or {}
    p = r.get("primary_metric", "")
    t_out = Table(_headers("figure", "value", "what it compares"))
    basis = "above the baseline" if h.get("quality_retained_basis") == "above_baseline" else "model / teacher"
    meaningless = " (meaningless here: see the warning)" if h.get("quality_retained_note") else ""
    t_out.add([C("quality retained", link=def_anchor("quality_retained")),
               C(sig(h.get("quality_retained"), 3), fmt_interval(h.get("quality_retained_ci")),
                 cls="fail" if meaningless else ""), C(f"{p}, {basis}{meaningless}", cls="wide")])
    if h.get("quality_retained_basis") == "above_baseline":
        t_out.add([C("plain ratio"), C(sig(h.get("quality_retained_plain"), 3),
                                       fmt_interval(h.get("quality_retained_plain_ci"))), C(f"{p}, model / teacher")])
        base = (r.get("baselines") or {}).get(p) or {}
        t_out.add([C("baseline", link=def_anchor("baseline")), C(sig(h.get("baseline"), 3)),
                   C(base.get("what"), cls="wide")])
    key = "scoring_speedup" if "scoring_speedup" in h else "decode_speedup"
    versus = "items/s against the teacher on PyTorch" if key == "scoring_speedup" else \
        f"decode tok/s against the teacher on PyTorch fp32, batch {h.get('batch_size')}"
    t_out.add([C(key.replace("_", " "), link=def_anchor(key)), C(fmt_ratio(h.get(key))),
               C(f"{versus}; served by {h.get('backend') or DASH}", cls="wide")])
    size, params = h.get("size_ratio"), h.get("params_ratio")
    t_out.add([C("size on disk", link=def_anchor("size_ratio")), C(fmt_bytes(v.get("size_bytes")), cls="num"),
               C((f"{fmt_fraction(size)} of " if size else "") + f"the teacher's {fmt_bytes(t.get('size_bytes'))}")])
    t_out.add([C("parameters", link=def_anchor("params_ratio")), C(fmt_count(v.get("params")), cls="num"),
               C((f"{fmt_ratio(params)} " if params else "") + f"the teacher's {fmt_count(t.get('params'))}")])
    return t_out


# ---------------------------------------------------------------- gates


def gates_table(r: dict) -> Table:
    """Each gate with its verdict in colour and in words (screen readers, report.md, print)."""
    t = Table(_headers("figure", "needs", "value", "verdict", "margin", "why"),
              empty="No gates set (a benchmark stage's gates fail a run on a figure, see the docs).")
    for g in r.get("gates", []):
        figure = g["figure"]
        base = re.sub(r"_(low|high)$", "", figure)
        why = _gate_why(r, g)
        t.add([C(figure, link=def_anchor(base) if base in DEFINITIONS else ""),
               C(f"{g['op']} {sig(g['threshold'])}", cls="num"), C(sig(g.get("value")), cls="num"),
               C("✔ pass" if g["passed"] else "✘ FAIL", cls="pass" if g["passed"] else "fail"),
               C(fmt_signed(g.get("margin")), cls="num"), C(why, cls="wide")], "" if g["passed"] else "failed")
    return t


def _gate_why(r: dict, g: dict) -> str:
    """Why a gate failed whatever its value, short: the headline's note is already the first line."""
    reason = g.get("reason")
    if reason and reason == (r.get("headline") or {}).get("quality_retained_note"):
        return reason.split(":")[0] + " (see the warning above)"
    return reason or ("not measured" if g.get("value") is None else "")


def gates_summary(r: dict) -> tuple[str, str]:
    """(sentence, css class) over all gates: ``2 of 3 gates pass; failed: decode_speedup``."""
    gates = r.get("gates") or []
    if not gates:
        return "", ""
    failed = [g["figure"] for g in gates if not g["passed"]]
    if not failed:
        return f"✔ All {len(gates)} gate{'s' if len(gates) > 1 else ''} pass.", "pass"
    return f"✘ {len(gates) - len(failed)} of {len(gates)} gates pass; failed: {', '.join(failed)}.", "fail"


# ---------------------------------------------------------------- the evidence


def _role(r: dict, model_id: str) -> str:
    return "teacher" if model_id == r.get("teacher") else "final" if model_id == r.get("final_model") else ""


def _model_cell(r: dict, model_id: str) -> Cell:
    role = _role(r, model_id)
    return C(model_id + (" (final)" if role == "final" else ""), cls=role)


def _quality_figures(r: dict) -> list[str]:
    """The primary figure first, then the others in name order."""
    found = {f for m in r.get("models", []) for v in m.get("variants", []) for f in (v.get("quality") or {})}
    p = r.get("primary_metric")
    return ([p] if p in found else []) + sorted(found - {p})


def retained_ci(r: dict, v: dict):
    """The interval of a variant's quality_retained: above the baseline where it was measured so."""
    p = r.get("primary_metric")
    above = p in (r.get("baselines") or {}) and (v.get("above_baseline") or {}).get(p) is not None
    return (v.get("above_baseline_ci" if above else "retained_ci") or {}).get(p)


def quality_table(r: dict) -> Table:
    figures, hints = _quality_figures(r), install_hints(r)
    heads = [C(f"{f} {_arrow(r, f)}", link=def_anchor(f)) for f in figures]
    t = Table(_headers("model", "format", "runtime", "params", "size", *heads,
                       C("retained", link=def_anchor("quality_retained")), "notes"))
    for m in r.get("models", []):
        if m.get("status") == "failed":
            t.add([_model_cell(r, m["id"]), reason_cell(m.get("reason"), hints, "✘ FAILED: ", "fail wide",
                                                         len(t.headers) - 1)], "failed")
        for v in m.get("variants", []):
            t.add(_quality_row(r, m["id"], v, figures, hints), _role(r, m["id"]))
    return t


def _quality_row(r: dict, model_id: str, v: dict, figures: list[str], hints: list[str]) -> list[Cell]:
    """A variant's figures; one reason across the figure columns where none was measured."""
    q, cis = v.get("quality") or {}, v.get("quality_ci") or {}
    head = [_model_cell(r, model_id), C(FORMAT_NAMES.get(v["format"], v["format"])), C(v.get("quality_backend")),
            C(fmt_count(v.get("params")), cls="num"), C(fmt_bytes(v.get("size_bytes")), cls="num")]
    if v.get("quality_skipped") and all(x is None for x in q.values()):
        return [*head, _notes_cell(v, hints, span=len(figures) + 2)]
    return [*head, *[C(sig(q.get(f)), fmt_interval(cis.get(f)), cls="num") for f in figures],
            C(sig(v.get("quality_retained")), fmt_interval(retained_ci(r, v)), cls="num"), _notes_cell(v, hints)]


def baseline_table(r: dict) -> Table:
    """Each figure's chance or trivial baseline: what a model that cannot do the task would score."""
    t = Table(_headers("figure", "baseline", "what scores it"))
    for f, b in (r.get("baselines") or {}).items():
        t.add([C(f, link=def_anchor(f)), C(sig(b.get("value")), fmt_interval(b.get("ci")), cls="num"),
               C(b.get("what"), cls="wide")])
    return t


def _spread_cell(stat: dict | None, key: str = "median") -> Cell:
    """``median (min–max)``: the spread tells whether two numbers differ beyond the noise."""
    if not stat:
        return C("")
    return C(sig(stat[key]), f"({sig(stat['min'])}–{sig(stat['max'])})", cls="num")


def _skipped_speed_row(r: dict, e: dict, batch, reason, status: str, hints: list[str]) -> list[Cell]:
    cls = "fail" if status == "failed" else "skip"
    mark = "✘ failed: " if status == "failed" else "skipped: "
    return [_model_cell(r, e["model"]), C(e["backend"]), C(batch), reason_cell(reason, hints, mark, f"{cls} wide", 8)]


def speed_table(r: dict) -> Table:
    hints = install_hints(r)
    t = Table(_headers("model", "runtime", "batch", "decode tok/s", "prefill tok/s", "TTFT ms",
                       "latency ms p50 / p95 / p99", "peak RSS", "load s",
                       C("decode speedup", link=def_anchor("decode_speedup")), "status"))
    for e in r.get("speed", []):
        if e.get("status") != "ok" and not e.get("batches"):
            t.add(_skipped_speed_row(r, e, "", e.get("reason"), e.get("status", ""), hints), "skipped")
            continue
        for b in e.get("batches", []):
            if b["status"] != "ok":
                t.add(_skipped_speed_row(r, e, b["batch_size"], b.get("reason"), b["status"], hints), "skipped")
                continue
            lat = b["latency_ms"]
            ratio = ((b.get("ratios") or {}).get("vs_teacher_baseline") or {}).get("decode_speedup")
            t.add([_model_cell(r, e["model"]), C(e["backend"]), C(b["batch_size"]),
                   _spread_cell(b["decode_tok_s"]), _spread_cell(b["prefill_tok_s"]), _spread_cell(b["ttft_ms"]),
                   C(f"{sig(lat['p50'])} / {sig(lat['p95'])} / {sig(lat['p99'])}", f"(n={lat['n']})", cls="num"),
                   C(fmt_mb(e.get("peak_rss_mb")), cls="num"), C(sig(e.get("load_s"), 2), cls="num"),
                   C(fmt_ratio(ratio), cls="num"), C("ok")], _role(r, e["model"]))
    return t


def concurrency_table(r: dict) -> Table:
    hints = install_hints(r)
    t = Table(_headers("model", "runtime", "requests", "throughput tok/s", "latency p50 ms", "gain vs teacher fp32",
                       "status"), empty="Not measured (speed.concurrency is 0).")
    for e in r.get("speed", []):
        c = e.get("concurrency")
        if not c:
            continue
        gain = ((e.get("ratios") or {}).get("vs_teacher_baseline") or {}).get("throughput_gain")
        ok = c["status"] == "ok"
        t.add([_model_cell(r, e["model"]), C(e["backend"]), C(c["requests"]),
               *([_spread_cell(c.get("throughput_tok_s")), C(sig(c["latency_ms"]["p50"]), cls="num"),
                  C(fmt_ratio(gain), cls="num"), C("ok")] if ok else
                 [reason_cell(c.get("reason"), hints, f"{c['status']}: ", "skip wide", 4)])], _role(r, e["model"]))
    return t


def scoring_speed_table(r: dict) -> Table:
    """Scorers (ranking / classification): items/s per batch size and per-context latency."""
    rows = r.get("scoring_speed") or []
    figures = list(dict.fromkeys(k for e in rows for k in e if k.startswith(("items_per_s", "context_latency"))))
    t = Table(_headers("model", "format", "runtime", *figures))
    for e in rows:
        t.add([_model_cell(r, e["model"]), C(FORMAT_NAMES.get(e["format"], e["format"])), C(e["backend"]),
               *[C(sig(e.get(f)), cls="num") for f in figures]], _role(r, e["model"]))
    return t


def _known(*parts) -> str:
    """Join the parts whose value is known: a document from an older or smaller benchmark lacks some."""
    return ", ".join(text for text, value in parts if value is not None)


def hardware_table(r: dict) -> Table:
    hw = r.get("hardware") or {}
    cpu, gpu = hw.get("cpu") or {}, hw.get("gpu") or {}
    libs = ", ".join(f"{k} {v}" for k, v in (hw.get("libraries") or {}).items() if v)
    counts = _known((f"{cpu.get('physical_cores')} cores", cpu.get("physical_cores")),
                    (f"{cpu.get('logical_cores')} threads", cpu.get("logical_cores")),
                    (f"{sig(cpu.get('memory_gb'))} GB", cpu.get("memory_gb")))
    t = Table(_headers("", ""))
    t.add([C("CPU"), C(f"{cpu.get('model') or DASH}" + (f" ({counts})" if counts else ""))])
    t.add([C("CPU flags"), C(" ".join(cpu.get("flags") or []))])
    t.add([C("GPU"), C(f"{gpu.get('name')} ({sig(gpu.get('memory_gb'))} GB)" if gpu else "none")])
    t.add([C("torch threads"), C(hw.get("torch_threads"))])
    t.add([C("libraries"), C(libs)])
    t.add([C("OS"), C(hw.get("os"))])
    return t


SECTIONS = [
    ("Quality (95% intervals in brackets)", quality_table),
    ("Baselines", baseline_table),
    ("Speed (median, min–max over the timed requests)", speed_table),
    ("Concurrent requests", concurrency_table),
    ("Machine", hardware_table),
]
SCORING_SECTIONS = [  # ranking / classification recipes: no decoding, so scoring speed instead
    ("Quality (95% intervals in brackets)", quality_table),
    ("Baselines", baseline_table),
    ("Scoring speed", scoring_speed_table),
    ("Machine", hardware_table),
]


def sections(r: dict) -> list:
    return SCORING_SECTIONS if "scoring_speed" in r else SECTIONS


# ---------------------------------------------------------------- plots

DPI = 110
# colour-blind-safe (Okabe-Ito) colour and a marker shape per runtime family: told apart in grey too
FAMILY_STYLE = {"PyTorch": ("#0072B2", "o"), "ONNX Runtime": ("#E69F00", "s"), "llama.cpp": ("#009E73", "D"),
                "vLLM": ("#CC79A7", "^")}


def runtime_family(backend: str | None) -> str:
    b = backend or ""
    if b.startswith("torch"):
        return "PyTorch"
    if b.startswith("onnxruntime"):
        return "ONNX Runtime"
    return {"llama_cpp": "llama.cpp", "vllm": "vLLM"}.get(b, b or "?")


SHORT_BACKEND = {"torch_fp32": "fp32", "torch_bf16": "bf16", "onnxruntime_genai": "ONNX", "llama_cpp": "GGUF",
                 "vllm": "vLLM", "torch-independent": "torch, unshared", "onnxruntime:scorer.onnx": "ONNX",
                 "onnxruntime:scorer.int8.onnx": "ONNX int8"}


def _point(r: dict, model_id: str, backend: str, v: dict, x: float, x_lo: float, x_hi: float, y, ci,
           tag: str = "") -> dict:
    lo, hi = ci if ci else (y, y)
    return {"model": model_id, "backend": backend, "tag": tag or SHORT_BACKEND.get(backend, backend),
            "family": runtime_family(backend), "x": x,
            "x_lo": x_lo, "x_hi": x_hi, "y": y, "y_lo": lo, "y_hi": hi, "role": _role(r, model_id),
            "size_mb": (v.get("size_bytes") or 0) / 1e6}


def latency_points(r: dict) -> list[dict]:
    """One point per (model variant, runtime): request latency (generation, at the first batch size) or
    per-context latency (scorers) against the primary figure with its 95% interval."""
    pm = r.get("primary_metric")
    variants = {(m["id"], v["format"]): v for m in r.get("models", []) for v in m.get("variants", [])}
    pts = []
    if "scoring_speed" in r:
        for e in r["scoring_speed"]:
            v = variants.get((e["model"], e["format"])) or {}
            q, x = (v.get("quality") or {}).get(pm), e.get("context_latency_p50_ms")
            if q is not None and x is not None:
                hi = e.get("context_latency_p99_ms", x)
                pts.append(_point(r, e["model"], e["backend"], v, x, x, hi, q, (v.get("quality_ci") or {}).get(pm)))
        return pts
    b0 = r["settings"]["speed"]["batch_sizes"][0]
    for e in r.get("speed", []):
        b = next((b for b in e.get("batches", []) if b["batch_size"] == b0 and b["status"] == "ok"), None)
        v = variants.get((e["model"], e["format"])) or {}
        q = (v.get("quality") or {}).get(pm)
        if b and q is not None:
            lat = b["latency_ms"]
            pts.append(_point(r, e["model"], e["backend"], v, lat["p50"], lat.get("min", lat["p50"]),
                              lat.get("max", lat["p50"]), q, (v.get("quality_ci") or {}).get(pm)))
    return pts


def size_points(r: dict) -> list[dict]:
    """One point per model variant: weights on disk against quality retained with its interval."""
    pts = []
    for m in r.get("models", []):
        for v in m.get("variants", []):
            q = v.get("quality_retained")
            if q is not None and v.get("size_bytes"):
                mb = v["size_bytes"] / 1e6
                pts.append(_point(r, m["id"], v.get("quality_backend") or v["format"], v, mb, mb, mb, q,
                                  retained_ci(r, v), FORMAT_NAMES.get(v["format"], v["format"])))
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _new_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _draw_points(ax, pts: list[dict]) -> None:
    """Error bars from the 95% intervals (y) and the timed spread (x); a colour and marker per runtime
    family; the teacher a large star, the final model ringed in black."""
    for fam in sorted({p["family"] for p in pts}, key=lambda f: (f not in FAMILY_STYLE, f)):
        color, marker = FAMILY_STYLE.get(fam, ("#555555", "v"))
        sub = [p for p in pts if p["family"] == fam]
        ax.errorbar([p["x"] for p in sub], [p["y"] for p in sub],
                    xerr=[[max(p["x"] - p["x_lo"], 0) for p in sub], [max(p["x_hi"] - p["x"], 0) for p in sub]],
                    yerr=[[max(p["y"] - p["y_lo"], 0) for p in sub], [max(p["y_hi"] - p["y"], 0) for p in sub]],
                    fmt=marker, color=color, ms=7, capsize=3, elinewidth=1, label=fam, zorder=3)
    for p in pts:
        if p["role"] == "teacher":
            ax.scatter([p["x"]], [p["y"]], marker="*", s=320, color="#D55E00", edgecolors="black", zorder=5,
                       label="teacher")
        elif p["role"] == "final":
            ax.scatter([p["x"]], [p["y"]], marker="o", s=190, facecolors="none", edgecolors="black",
                       linewidths=2, zorder=5, label="final model")
    ax.grid(alpha=0.3)


def _labels(pts: list[dict]) -> list[str]:
    """The model id, with its runtime or format where the model appears more than once."""
    count: dict[str, int] = {}
    for p in pts:
        count[p["model"]] = count.get(p["model"], 0) + 1
    return [p["model"] + (f" · {p['tag']}" if count[p["model"]] > 1 else "") for p in pts]


# candidate label offsets (points) around a marker, nearest ring first and level with the point first
# (a label beside its point is read as its own); labels beyond the first ring get a leader line
_RINGS = (4, 14, 26, 40, 56)
_DIRECTIONS = ((1, 0), (-1, 0), (0.8, 0.6), (0.8, -0.6), (-0.8, 0.6), (-0.8, -0.6), (0, 1), (0, -1))
MARKER_RADIUS = {"teacher": 9.0, "final": 7.0, "": 4.0}  # points: the star, the ring, a plain marker


def _offsets(role: str) -> list[tuple[float, float, bool]]:
    """(dx, dy, leader line) candidates in points, measured from the marker's edge, not its centre."""
    edge = MARKER_RADIUS[role]
    return [((edge + r) * dx, (edge + r) * dy, r > _RINGS[0]) for r in _RINGS for dx, dy in _DIRECTIONS]


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _outside(box, frame) -> float:
    inside = _overlap(box, frame)
    return box.width * box.height - inside


def _annotate(ax, p: dict, text: str, offset: tuple[float, float, bool]):
    dx, dy, far = offset
    return ax.annotate(
        text, (p["x"], p["y"]), xytext=(dx, dy), textcoords="offset points", fontsize=9,
        ha="left" if dx > 0 else "right" if dx < 0 else "center",
        va="bottom" if dy > 0 else "top" if dy < 0 else "center",
        fontweight="bold" if p["role"] else "normal", zorder=6,
        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},  # lines pass behind
        arrowprops={"arrowstyle": "-", "color": "0.45", "lw": 0.7, "shrinkA": 1,
                    "shrinkB": MARKER_RADIUS[p["role"]]} if far else None)


def place_labels(ax, pts: list[dict]) -> list:
    """Label every point where the label overlaps no other label, no marker and stays in the axes:
    the first free candidate offset, nearest first (the teacher and the final model choose first);
    where none is free, the least overlapping. Deterministic: same points, same places."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    from matplotlib.transforms import Bbox

    px = fig.dpi / 72
    taken = []
    for p in pts:
        (cx, cy), rad = ax.transData.transform((p["x"], p["y"])), MARKER_RADIUS[p["role"]] * px
        taken.append(Bbox.from_extents(cx - rad, cy - rad, cx + rad, cy + rad))
    order = sorted(range(len(pts)), key=lambda i: ({"teacher": 0, "final": 1}.get(pts[i]["role"], 2), i))
    texts, anns = _labels(pts), []
    for i in order:
        best = None
        for offset in _offsets(pts[i]["role"]):
            ann = _annotate(ax, pts[i], texts[i], offset)
            box = ann.get_window_extent(renderer).padded(2)
            cost = sum(_overlap(box, t) for t in taken) + 4 * _outside(box, frame)
            ann.remove()
            if best is None or cost < best[0]:
                best = (cost, offset, box)
            if cost == 0:
                break
        anns.append(_annotate(ax, pts[i], texts[i], best[1]))
        taken.append(best[2])
    return anns


def _finish_axes(ax, pts: list[dict], log_x: bool = False) -> None:
    """Room around the points for labels, limits fixed before placing them, legend under the axes."""
    if log_x:
        ax.set_xscale("log")
    ax.margins(x=0.3, y=0.25)
    ax.autoscale_view()
    lo, hi = ax.get_xlim()
    if not log_x and lo < 0 <= min(p["x_lo"] for p in pts):  # no negative latencies on the axis
        lo = -0.04 * hi
    ax.set_xlim(lo, hi)
    ax.set_ylim(ax.get_ylim())
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))
    ax.legend(unique.values(), unique.keys(), loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3,
              fontsize=8, frameon=False)
    place_labels(ax, pts)


def pareto_figure(r: dict):
    """Quality (primary figure, 95% intervals) against latency; Pareto front dashed; the baseline dotted."""
    pts = latency_points(r)
    if not pts:
        return None
    fig, ax = _new_figure()
    up = r.get("primary_higher_is_better", True)
    base = ((r.get("baselines") or {}).get(r.get("primary_metric")) or {}).get("value")
    if base is not None:
        ax.axhline(base, ls=":", color="0.4", lw=1, label="baseline (no skill)", zorder=1)
    front = pareto_front([(p["x"], p["y"]) for p in pts], up)
    ax.plot([pts[i]["x"] for i in front], [pts[i]["y"] for i in front], "--", color="gray", lw=1,
            label="Pareto front", zorder=2)
    _draw_points(ax, pts)
    if "scoring_speed" in r:
        ax.set_xlabel("latency per context (ms, p50; bar to p99)")
    else:
        s = r["settings"]["speed"]
        ax.set_xlabel(f"request latency (ms, p50; bar min–max), batch {s['batch_sizes'][0]}, "
                      f"{s['new_tokens']} new tokens")
    ax.set_ylabel(f"{r.get('primary_metric')} ({'higher' if up else 'lower'} is better)")
    ax.set_title("Quality vs latency (bars: 95% intervals)", fontsize=10)
    _finish_axes(ax, pts)
    return fig


def size_quality_figure(r: dict):
    """Quality retained (teacher = 1, its 95% interval) against weights on disk, log scale."""
    pts = size_points(r)
    if not pts:
        return None
    fig, ax = _new_figure()
    ax.axhline(1.0, ls=":", color="0.4", lw=1, label="teacher = 1", zorder=1)
    if (r.get("headline") or {}).get("quality_retained_basis") == "above_baseline":
        ax.axhline(0.0, ls="--", color="0.6", lw=1, label="baseline = 0", zorder=1)
    _draw_points(ax, pts)
    ax.set_xlabel("weights on disk (MB, log scale)")
    ax.set_ylabel(f"quality retained ({r.get('primary_metric')})")
    ax.set_title("Size vs quality retained (bars: 95% intervals)", fontsize=10)
    _finish_axes(ax, pts, log_x=True)
    return fig


def pareto_png(r: dict) -> bytes | None:
    fig = pareto_figure(r)
    return None if fig is None else _png(fig)


def size_quality_png(r: dict) -> bytes | None:
    fig = size_quality_figure(r)
    return None if fig is None else _png(fig)


# (title, file name, alt text) of each plot
PLOTS = {"pareto": ("Quality vs latency", "pareto.png",
                    "Each model on each runtime: the primary figure against latency. Vertical bars: 95% intervals; "
                    "horizontal bars: spread over the timed requests; star: the teacher; ring: the final model; "
                    "colour and shape: the runtime family"),
         "size": ("Size vs quality", "size_quality.png",
                  "Each model variant: quality retained (teacher = 1) against weights on disk, with 95% intervals")}


# ---------------------------------------------------------------- Markdown


def _md_cell(c: Cell) -> str:
    text = f"[{c.text}](#{c.link})" if c.link else c.text
    if c.note:
        text += f" {c.note}"
    text += "".join(f" [{n}]" for n in c.fns)
    return text.replace("|", "\\|").replace("\n", " ")


def _md_row(cells: list[Cell]) -> str:
    """Markdown has no column spans: a spanning cell is followed by blank ones."""
    return "| " + " | ".join(_md_cell(c) + " |" * (c.span - 1) for c in cells) + " |"


def md_table(t: Table) -> str:
    if not t.rows:
        return f"_{t.empty}_\n"
    lines = [_md_row(t.headers), "|" + "---|" * len(t.headers)]
    return "\n".join(lines + [_md_row(row) for row in t.rows]) + "\n"


def _md_segments(segments: list[Segment]) -> str:
    return "".join(f"[{text}](#{link})" if link else text for text, link in segments)


def _used_definitions(r: dict) -> list[str]:
    """Figures the page names, each defined once at the bottom."""
    h = r.get("headline") or {}
    speed = "scoring_speedup" if "scoring_speedup" in h else "decode_speedup"
    named = ["quality_retained", speed, "size_ratio", "params_ratio"]
    named += ["baseline"] if r.get("baselines") else []
    named += _quality_figures(r) + list(r.get("baselines") or {})
    named += [re.sub(r"_(low|high)$", "", g["figure"]) for g in r.get("gates") or []]
    return list(dict.fromkeys(f for f in named if f))


def _definition_items(r: dict) -> list[tuple[str, str, str]]:
    """(figure, its anchor here, its definition with the docs section) for each figure the page names."""
    out = []
    for f in _used_definitions(r):
        anchor, text = definition(f)
        out.append((f, def_anchor(f), f"{text}; see {DOCS}#{anchor}"))
    return out


FOOTNOTE = "Not installed on the measuring machine; to measure these rows, install it:"


def _md_intro(r: dict) -> list[str]:
    note = headline_note(r)
    parts = [f"# Benchmark: {r.get('recipe') or 'slmkit'}\n"]
    if note:
        parts.append(f"> **Warning:** {note}.\n")
    parts.append(f"**{_md_segments(headline_segments(r))}.**\n")
    parts += [_meta_line(r) + "\n", md_table(key_figures_table(r)), "## Gates\n"]
    summary, _ = gates_summary(r)
    return parts + ([f"**{summary}**\n"] if summary else []) + [md_table(gates_table(r))]


def render_markdown(r: dict, images: dict[str, tuple[str, str, str]]) -> str:
    """report.md: the same page as report.html; ``images`` maps a plot key to (title, PNG file beside
    report.md, alt text)."""
    parts = _md_intro(r)
    if "pareto" in images:
        title, name, alt = images["pareto"]
        parts += [f"## {title}\n", f"![{alt}]({name})\n"]
    for title, fn in sections(r):
        parts += [f"## {title}\n", md_table(fn(r))]
    parts += [f"## {title}\n\n![{alt}]({name})\n" for k, (title, name, alt) in images.items() if k != "pareto"]
    parts.append("## Definitions\n")
    parts += [f'- <a id="{a}"></a>**{f}**: {text}' for f, a, text in _definition_items(r)]
    hints = install_hints(r)
    if hints:
        parts += ["\n## Notes\n", *[f"{i}. {FOOTNOTE} `{h}`" for i, h in enumerate(hints, 1)]]
    return "\n".join(parts) + "\n"


def _meta_line(r: dict) -> str:
    cpu, gpu = ((r.get("hardware") or {}).get("cpu") or {}), (r.get("hardware") or {}).get("gpu")
    threads = f" ({cpu['logical_cores']} threads)" if cpu.get("logical_cores") else ""
    machine = f"{cpu.get('model') or 'an unrecorded machine'}{threads}" + (f", {gpu.get('name')}" if gpu else "")
    repeats = ((r.get("settings") or {}).get("speed") or {}).get("repeats")
    timed = f" · speed: median of {repeats} timed requests" if repeats and "scoring_speed" not in r else ""
    when = f", {r['created_at'][:16].replace('T', ' ')}" if r.get("created_at") else ""
    return (f"Teacher: {r.get('teacher')} · final model: {r.get('final_model')} · primary metric: "
            f"{r.get('primary_metric')} · {r.get('eval_examples', DASH)} eval examples{timed} · "
            f"measured on {machine}{when}.")


# ---------------------------------------------------------------- HTML

CSS = """
:root{--pass:#1a7f37;--pass-bg:#dafbe1;--fail:#b42318;--fail-bg:#fee4e2;--skip:#7a5b00;--skip-bg:#fff8c5;
--line:#d0d7de;--muted:#57606a;--teacher:#fbefe6;--final:#e8f1fb}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;line-height:1.45;color:#1f2328;
margin:0 auto;padding:1.2rem;max-width:1200px;font-size:16px}
h1{font-size:1.5rem;margin:.2rem 0 .6rem}h2{font-size:1.2rem;margin:1.8rem 0 .5rem}
a{color:#0550ae}
.answer{font-size:1.25rem;font-weight:600;margin:.4rem 0 .6rem;padding:.7rem .9rem;border-left:5px solid #0550ae;
background:#f6f8fa}
.alert{font-size:1.15rem;font-weight:600;padding:.7rem .9rem;border-left:5px solid var(--fail);
background:var(--fail-bg);color:var(--fail);margin:.4rem 0}
.meta{color:var(--muted);font-size:.9rem}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;margin:.5rem 0 1rem;border:1px solid var(--line);
border-radius:6px}
table{border-collapse:collapse;width:100%;font-size:.85rem}
th,td{padding:.35rem .6rem;text-align:left;vertical-align:top;border-bottom:1px solid var(--line)}
th{background:#f6f8fa;white-space:nowrap;position:sticky;top:0}
td.num{white-space:nowrap;font-variant-numeric:tabular-nums}
small{color:var(--muted);font-size:.8em;white-space:nowrap}h2 small{white-space:normal;overflow-wrap:anywhere}
td.pass,.summary.pass{color:var(--pass);background:var(--pass-bg);font-weight:700}
td.fail,.summary.fail{color:var(--fail);background:var(--fail-bg);font-weight:700}
td.skip{color:var(--skip);background:var(--skip-bg)}td.wide{min-width:16em}
td.moved,.summary.moved{color:#0550ae;background:#ddf4ff;font-weight:700}tr.beyond td:first-child{font-weight:700}
.summary{display:inline-block;padding:.3rem .7rem;border-radius:6px}
tr.teacher td:first-child{background:var(--teacher);font-weight:700}
tr.final td:first-child{background:var(--final);font-weight:700}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:6px}
figcaption{color:var(--muted);font-size:.85rem}
dl{font-size:.9rem}dt{font-weight:700;margin-top:.4rem}dd{margin:0 0 0 1rem}
sup a{text-decoration:none;font-weight:700}
code{font-size:.9em;background:#f6f8fa;padding:0 .2em;border-radius:3px}
@media (max-width:600px){body{padding:.7rem;font-size:15px}.answer{font-size:1.08rem}h1{font-size:1.25rem}
table{font-size:.78rem}th,td{padding:.3rem .4rem}}
@media print{body{max-width:none;padding:0;font-size:10pt}.scroll{overflow:visible;border:none}
table{font-size:8pt}th{position:static}a{color:inherit;text-decoration:none}
tr,figure,.answer,.alert{break-inside:avoid}h2{break-after:avoid}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _html_cell(c: Cell, tag: str = "td") -> str:
    body = f'<a href="#{c.link}">{_esc(c.text)}</a>' if c.link else _esc(c.text)
    if c.note:
        body += f" <small>{_esc(c.note)}</small>"
    body += "".join(f'<sup><a href="#fn-{n}" aria-label="note {n}">{n}</a></sup>' for n in c.fns)
    cls = f' class="{c.cls}"' if c.cls and tag == "td" else ""
    span = f' colspan="{c.span}"' if c.span > 1 else ""
    return f"<{tag}{cls}{span}>{body}</{tag}>"


def html_table(t: Table, caption: str = "") -> str:
    """A table in a horizontally scrolling box, so a phone shows it without squeezing the page."""
    if not t.rows:
        return f"<p><em>{_esc(t.empty)}</em></p>"
    head = "".join(_html_cell(h, "th") for h in t.headers)
    body = "".join(
        (f'<tr class="{cls}">' if cls else "<tr>") + "".join(_html_cell(c) for c in row) + "</tr>"
        for row, cls in zip(t.rows, t.row_classes + [""] * (len(t.rows) - len(t.row_classes))))
    cap = f"<caption class='meta'>{_esc(caption)}</caption>" if caption else ""
    return f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def html_segments(segments: list[Segment]) -> str:
    return "".join(f'<a href="#{link}">{_esc(t)}</a>' if link else _esc(t) for t, link in segments)


def html_page(title: str, body: list[str]) -> str:
    """One file, no external resources: inline CSS, no scripts, images as data URIs."""
    return "\n".join([
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>", *body, "</body></html>"])


def _html_figure(title: str, alt: str, data: bytes) -> str:
    """The image with its reading guide (the alt text) as the caption: a screen reader gets the same."""
    b64 = base64.b64encode(data).decode("ascii")
    return (f'<figure><img alt="{_esc(title)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{_esc(alt)}</figcaption></figure>")


def html_headline(r: dict) -> list[str]:
    note = headline_note(r)
    out = [f'<p class="alert" role="alert">Warning: {_esc(note)}.</p>'] if note else []
    return out + [f'<p class="answer" id="headline">{html_segments(headline_segments(r))}.</p>']


def _html_intro(r: dict) -> list[str]:
    summary, cls = gates_summary(r)
    return [f"<header><h1>Benchmark: {_esc(r.get('recipe') or 'slmkit')}</h1></header>", *html_headline(r),
            f'<p class="meta">{_esc(_meta_line(r))}</p>', html_table(key_figures_table(r)),
            '<section id="gates"><h2>Gates</h2>'
            + (f'<p class="summary {cls}" role="status">{_esc(summary)}</p>' if summary else "")
            + html_table(gates_table(r)) + "</section>"]


def _html_definitions(r: dict) -> str:
    items = "".join(f'<dt id="{a}">{_esc(f)}</dt><dd>{_esc(text)}</dd>' for f, a, text in _definition_items(r))
    return f'<section id="definitions"><h2>Definitions</h2><dl>{items}</dl></section>'


def _html_footnotes(r: dict) -> str:
    items = "".join(f'<li id="fn-{i}">{_esc(FOOTNOTE)} <code>{_esc(h)}</code></li>'
                    for i, h in enumerate(install_hints(r), 1))
    return f'<section id="notes"><h2>Notes</h2><ol>{items}</ol></section>' if items else ""


def render_html(r: dict, pngs: dict[str, tuple[str, str, bytes]]) -> str:
    """The answer, the gates, the Pareto plot, then the tables and the other plots; ``pngs`` maps a plot key
    to (title, alt text, PNG bytes)."""
    parts = _html_intro(r)
    if "pareto" in pngs:
        title, alt, data = pngs["pareto"]
        parts.append(f'<section id="pareto"><h2>{_esc(title)}</h2>{_html_figure(title, alt, data)}</section>')
    for title, fn in sections(r):
        parts.append(f"<section><h2>{_esc(title)}</h2>{html_table(fn(r))}</section>")
    parts += [f"<section><h2>{_esc(t)}</h2>{_html_figure(t, alt, data)}</section>"
              for key, (t, alt, data) in pngs.items() if key != "pareto"]
    parts += [_html_definitions(r), _html_footnotes(r)]
    return html_page(f"slmkit benchmark: {r.get('recipe') or ''}", [p for p in parts if p])


# ---------------------------------------------------------------- terminal


def rich_table(r: dict):
    """A compact speed table (medians only) with the headline sentence in its caption, for the terminal."""
    from rich.table import Table as RichTable

    t = RichTable(title="slmkit benchmark", caption=headline_text(r))
    if "scoring_speed" in r:
        table = scoring_speed_table(r)
        return _rich_rows(t, [h.text for h in table.headers], [[c.plain() for c in row] for row in table.rows])
    for name in ("model", "backend", "batch", "decode tok/s", "TTFT ms", "p50 ms", "RSS", "speedup", "retained"):
        t.add_column(name, overflow="fold")
    quality = {(m["id"], v["format"]): v.get("quality_retained") for m in r["models"] for v in m.get("variants", [])}
    for e in r["speed"]:
        q = sig(quality.get((e["model"], e["format"])))
        rows = e.get("batches") or [{"batch_size": DASH, "status": e["status"], "reason": e.get("reason")}]
        for b in rows:
            if b["status"] != "ok":
                t.add_row(e["model"], e["backend"], str(b["batch_size"]), f"{b['status']}: {b.get('reason')}",
                          "", "", "", "", q, style="yellow")
                continue
            ratio = ((b.get("ratios") or {}).get("vs_teacher_baseline") or {}).get("decode_speedup")
            t.add_row(e["model"], e["backend"], str(b["batch_size"]), sig(b["decode_tok_s"]["median"]),
                      sig(b["ttft_ms"]["median"]), sig(b["latency_ms"]["p50"]), fmt_mb(e.get("peak_rss_mb")),
                      fmt_ratio(ratio), q)
    return t


def _rich_rows(t, headers: list[str], rows: list[list[str]]):
    for name in headers:
        t.add_column(name, overflow="fold")
    for row in rows:
        t.add_row(*row)
    return t


# ---------------------------------------------------------------- files


def _plots(r: dict, out_dir: Path) -> dict[str, tuple[str, str, str, bytes]]:
    """key -> (title, file name, alt text, PNG bytes): the two plots and any layer-importance plots."""
    out = {}
    for key, render in (("pareto", pareto_png), ("size", size_quality_png)):
        data = render(r)
        if data:
            out[key] = (PLOTS[key][0], PLOTS[key][1], PLOTS[key][2], data)
    for m in r["models"]:
        name = m.get("layer_importance_png")
        if name and (out_dir / name).is_file():
            title = f"Layer importance ({m['id']})"
            out[f"layers:{m['id']}"] = (title, name, f"{title}: score of each decoder layer", (out_dir / name).read_bytes())
    return out


def write_report(r: dict, out_dir: Path) -> Path:
    """results.json, report.md, report.html and the plot PNGs into out_dir; returns report.html."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {k: v for k, v in r.items() if not k.startswith("_")}
    (out_dir / "results.json").write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    plots = _plots(r, out_dir)
    for _, name, _, data in plots.values():
        if not (out_dir / name).is_file() or (out_dir / name).read_bytes() != data:
            (out_dir / name).write_bytes(data)
    (out_dir / "report.md").write_text(render_markdown(r, {k: (p[0], p[1], p[2]) for k, p in plots.items()}))
    (out_dir / "report.html").write_text(render_html(r, {k: (p[0], p[2], p[3]) for k, p in plots.items()}))
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
