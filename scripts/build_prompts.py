#!/usr/bin/env python
"""Build slmkit's shipped prompt sets from the Python standard library's own docstrings.

The quickstart needs a small chat dataset with real (not invented) answers that exists on
every machine without a download. The standard library is such a source: each public
function or class of a fixed list of stable modules, with its docstring and signature,
becomes a handful of instruction/answer pairs.

Outputs (in ``--out-dir``, default ``slmkit/data_files``):

* ``prompts.jsonl``  training prompts, several instruction templates per function;
* ``heldout.jsonl``  one prompt per held-out function (split by bare function name, so no
  function is in both files); the answer is the docstring's one-sentence summary verbatim
  (whitespace and reST markup normalised), for ROUGE-L / contains metrics.

Each line: {"messages": [{"role": "user", ...}, {"role": "assistant", ...}], "source": "json.dumps"}.
Compare rows have ``"source": "mod.a+mod.b"``; the module-listing row has ``"source": "mod"``.

Stdlib only and deterministic: modules, names and templates are iterated in sorted order and
all choices come from ``random.Random(seed)``. Docstrings differ slightly across Python
versions, so the output is reproducible on the same Python minor version.

    python scripts/build_prompts.py [--out-dir DIR] [--seed 1234]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

# fmt: off
MODULES = [
    "base64", "binascii", "bisect", "calendar", "cmath", "collections", "copy",
    "csv", "datetime", "decimal", "difflib", "fnmatch", "fractions", "functools", "glob",
    "gzip", "hashlib", "heapq", "html", "ipaddress", "itertools", "json", "math",
    "operator", "os.path", "pathlib", "pprint", "random", "re", "secrets", "shlex", "shutil",
    "statistics", "string", "struct", "textwrap", "time", "unicodedata", "urllib.parse",
    "uuid", "zlib",
]
# fmt: on

DEFAULT_SEED = 1234
HELDOUT_FRACTION = 0.25
TEMPLATES_PER_FUNCTION = 3
COMPARE_PER_MODULE = 3
MAX_ANSWER_CHARS = 400
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "slmkit" / "data_files"

_SIG_LINE = re.compile(r"^[\w.]+\(.*\)(\s*-+>\s*.*)?$")
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`")
_ADDR = re.compile(r" at 0x[0-9a-fA-F]+")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_SENT_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
_ABBREV = ("e.g.", "i.e.", "etc.", "vs.", "Ex.", "cf.", "...")

# fmt: off
IMPERATIVE = {
    "add", "apply", "build", "calculate", "change", "check", "choose", "compare", "compress",
    "compute", "construct", "convert", "copy", "count", "create", "decode", "decompress",
    "delete", "deserialize", "determine", "encode", "escape", "extract", "fill", "find",
    "format", "generate", "get", "initialize", "insert", "join", "list", "locate", "look",
    "make", "move", "normalize", "open", "pack", "parse", "perform", "pop", "print", "push",
    "quote", "raise", "read", "remove", "rename", "replace", "reset", "return", "run",
    "serialize", "set", "shuffle", "sort", "split", "strip", "test", "translate", "unpack",
    "unquote", "update", "wrap", "write", "yield",
}
# fmt: on


@dataclass
class Item:
    module: str
    name: str
    kind: str  # "function" or "class"
    summary: str  # first sentence of the docstring, cleaned
    paragraph: str  # first paragraph, cleaned, <= MAX_ANSWER_CHARS
    rest: list[str] = field(default_factory=list)  # later paragraphs, cleaned
    params: list[inspect.Parameter] | None = None  # None when no signature is available

    @property
    def qual(self) -> str:
        return f"{self.module}.{self.name}"


# ---------------------------------------------------------------- docstring handling


def clean(text: str) -> str:
    text = _ROLE.sub(r"`\1`", text)
    text = text.replace("``", "`")
    text = _ADDR.sub("", text)
    return " ".join(text.split())


def first_sentence(paragraph: str) -> str:
    parts = _SENT_END.split(paragraph)
    out = parts[0]
    for nxt in parts[1:]:
        if out.endswith(_ABBREV):
            out = f"{out} {nxt}"
        else:
            break
    return out


def truncate(text: str, limit: int = MAX_ANSWER_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    # prefer ending at a sentence boundary, else at a word boundary with an ellipsis
    m = max(cut.rfind(". "), cut.rfind(".\n"))
    if m >= limit // 3:
        return cut[: m + 1]
    return cut[: cut.rfind(" ")].rstrip(",;:") + "..."


def paragraphs(doc: str) -> list[str]:
    lines = doc.strip().splitlines()
    # C functions without a text signature start with "name(args) -> result" lines
    while lines and _SIG_LINE.match(lines[0].strip()):
        lines.pop(0)
    paras, cur = [], []
    for line in lines:
        if line.strip():
            cur.append(line)
        elif cur:
            paras.append(cur)
            cur = []
    if cur:
        paras.append(cur)
    return [clean("\n".join(p)) for p in paras]


def is_sentence(s: str) -> bool:
    words = _WORD.findall(s)
    return (
        len(words) >= 4
        and sum(len(w) >= 3 for w in words) >= 2  # rejects "Same as a + b."
        and s[:1].isalpha()
        and s[:1].isupper()
        and not _SIG_LINE.match(s)
        and len(s) <= 300
    )


def safe_signature(obj) -> list[inspect.Parameter] | None:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if any(_ADDR.search(repr(p.default)) for p in params if p.default is not p.empty):
        return None  # sentinel defaults repr with a memory address: not reproducible
    return params


def collect_module(modname: str) -> list[Item]:
    mod = importlib.import_module(modname)
    owners = {modname, mod.__name__, "_" + modname.rsplit(".", 1)[-1]}
    items = []
    seen_ids = set()
    for name in sorted(dir(mod)):
        if name.startswith("_"):
            continue
        obj = getattr(mod, name)
        if inspect.isclass(obj):
            if issubclass(obj, BaseException):
                continue
            kind = "class"
        elif inspect.isroutine(obj):
            kind = "function"
        else:
            continue
        if getattr(obj, "__name__", None) != name:
            continue  # aliases (hashlib.md5 -> openssl_md5, ...)
        owner = getattr(obj, "__module__", None) or ""
        exported = name in getattr(mod, "__all__", ()) and owner.startswith(modname + ".")
        if owner not in owners and not exported:
            continue  # re-exported from elsewhere (json.JSONDecoder from json.decoder is kept)
        if id(obj) in seen_ids:
            continue
        doc = obj.__doc__
        if not isinstance(doc, str) or not doc.strip():
            continue
        if kind == "class" and doc == getattr(type(obj), "__doc__", None):
            continue  # inherited metaclass docstring
        paras = paragraphs(inspect.cleandoc(doc))
        if not paras:
            continue
        summary = first_sentence(paras[0])
        if not is_sentence(summary):
            continue
        seen_ids.add(id(obj))
        items.append(
            Item(
                module=modname,
                name=name,
                kind=kind,
                summary=summary,
                paragraph=truncate(paras[0]),
                rest=paras[1:],
                params=safe_signature(obj),
            )
        )
    return items


# ---------------------------------------------------------------- templates


def lcfirst(s: str) -> str:
    return s[:1].lower() + s[1:] if s[1:2].islower() or len(s) == 1 else s


def strip_period(s: str) -> str:
    return s.removesuffix(".")


def param_desc(p: inspect.Parameter) -> str:
    kinds = {
        p.POSITIONAL_ONLY: "positional-only",
        p.POSITIONAL_OR_KEYWORD: "",
        p.KEYWORD_ONLY: "keyword-only",
    }
    if p.kind is p.VAR_POSITIONAL:
        return f"`*{p.name}` (any number of extra positional arguments)"
    if p.kind is p.VAR_KEYWORD:
        return f"`**{p.name}` (any extra keyword arguments)"
    bits = [b for b in (kinds[p.kind],) if b]
    bits.append("required" if p.default is p.empty else f"default `{p.default!r}`")
    return f"`{p.name}` ({', '.join(bits)})"


def call_expr(it: Item) -> str:
    args = []
    for p in it.params or []:
        if p.name in ("self", "cls"):
            continue
        if p.kind is p.VAR_POSITIONAL:
            args.append(f"*{p.name}")
        elif p.default is not p.empty or p.kind is p.VAR_KEYWORD:
            continue
        elif p.kind is p.KEYWORD_ONLY:
            args.append(f"{p.name}={p.name}")
        else:
            args.append(p.name)
    return f"{it.qual}({', '.join(args)})"


def t_explain(it, ctx):
    return f"Explain what the Python {it.kind} `{it.qual}` does.", it.paragraph


def t_beginner(it, ctx):
    if it.paragraph == it.summary:
        return None
    q = f"I'm new to Python. What is `{it.name}` in the `{it.module}` module for?"
    return q, it.paragraph


def t_summarise(it, ctx):
    return f"Summarise `{it.qual}` in one sentence.", it.summary


def t_when(it, ctx):
    words = it.summary.split()
    first = words[0].lower()
    body = lcfirst(strip_period(it.summary))
    if first in IMPERATIVE:
        a = f"Use `{it.qual}` when you want to {body}."
    elif first in ("a", "an", "the"):
        a = f"Use `{it.qual}` when you need {body}."
    elif first.endswith("s") and not first.endswith("ss") and first[:-1] in IMPERATIVE | {"return"}:
        a = f"Use `{it.qual}` when you need something that {body}."
    else:
        a = f"Reach for `{it.qual}` when this is what you need: {it.summary}"
    return f"When would you use `{it.qual}` in Python?", a


def t_example(it, ctx):
    if it.params is None:
        return None
    expr = call_expr(it)
    lhs = "obj" if it.kind == "class" else "result"
    placeholders = [
        p.name
        for p in it.params
        if p.name not in ("self", "cls") and (p.default is p.empty and p.kind is not p.VAR_KEYWORD)
    ]
    a = f"```python\nimport {it.module}\n{lhs} = {expr}\n```"
    if placeholders:
        names = ", ".join(f"`{n}`" for n in placeholders)
        a += f"\nReplace {names} with your own value{'s' if len(placeholders) > 1 else ''}."
    return f"Write a one-line example call of `{it.qual}`.", a


def t_module(it, ctx):
    if ctx["name_count"][it.name] > 1:
        return None  # the same name exists in several modules: the question is ambiguous
    q = f"Which standard-library module provides `{it.name}`?"
    a = f"`{it.name}` is provided by the `{it.module}` module: `from {it.module} import {it.name}`."
    return q, a


def t_args(it, ctx):
    if it.params is None:
        return None
    params = [p for p in it.params if p.name not in ("self", "cls")]
    if not params:
        a = f"`{it.qual}` takes no arguments."
    else:
        a = f"`{it.qual}` takes " + ", ".join(param_desc(p) for p in params) + "."
    return f"What arguments does `{it.qual}` take?", truncate(a)


def t_defaults(it, ctx):
    if it.params is None:
        return None
    opt = [p for p in it.params if p.default is not p.empty]
    q = f"Does `{it.qual}` have optional parameters with default values?"
    if not opt:
        return q, f"No. Every named parameter of `{it.qual}` must be given; none has a default."
    listing = ", ".join(f"`{p.name}={p.default!r}`" for p in opt)
    return q, truncate(f"Yes: {listing}.")


def t_tip(it, ctx):
    for para in it.rest:
        s = first_sentence(para)
        if is_sentence(s) and not s.lower().startswith(("see ", "for example")):
            return f"Give a short tip about using `{it.qual}`.", s
    return None


def t_returns(it, ctx):
    m = re.match(r"^Returns? (.+)$", it.summary)
    if not m or it.kind != "function":
        return None
    return f"What does `{it.qual}` return?", f"It returns {m.group(1)}"


def t_kind(it, ctx):
    q = f"Is `{it.qual}` a class or a function, and what is it for?"
    article = "a class" if it.kind == "class" else "a function"
    return q, f"`{it.qual}` is {article} in the `{it.module}` module. {it.summary}"


def t_reverse(it, ctx):
    if ctx["summary_count"][(it.module, it.summary)] > 1:
        return None
    q = f'Which {it.kind} in Python\'s `{it.module}` module is described as: "{it.summary}"'
    return q, f"`{it.qual}`."


def t_import(it, ctx):
    q = f"How do I import `{it.name}` from `{it.module}` and what does it do?"
    return q, f"`from {it.module} import {it.name}`. {it.summary}"


TEMPLATES = {
    "args": t_args,
    "beginner": t_beginner,
    "defaults": t_defaults,
    "example": t_example,
    "explain": t_explain,
    "import": t_import,
    "kind": t_kind,
    "module": t_module,
    "returns": t_returns,
    "reverse": t_reverse,
    "summarise": t_summarise,
    "tip": t_tip,
    "when": t_when,
}


def heldout_row(it: Item) -> dict:
    q = f"In one sentence, what does the Python {it.kind} `{it.qual}` do?"
    return row(q, it.summary, it.qual)


def row(user: str, assistant: str, source: str) -> dict:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
        "source": source,
    }


# ---------------------------------------------------------------- build


def build(seed: int) -> tuple[list[dict], list[dict], dict]:
    rng = random.Random(seed)
    items: list[Item] = []
    for modname in sorted(MODULES):
        items.extend(collect_module(modname))

    # split by bare name, so e.g. `os.path.join` and `shlex.join` land on the same side
    names = sorted({it.name for it in items})
    rng.shuffle(names)
    n_held = max(100, round(len(names) * HELDOUT_FRACTION))
    held_names = set(names[:n_held])
    train_items = [it for it in items if it.name not in held_names]
    held_items = [it for it in items if it.name in held_names]

    ctx = {"name_count": {}, "summary_count": {}}
    for it in items:
        ctx["name_count"][it.name] = ctx["name_count"].get(it.name, 0) + 1
        key = (it.module, it.summary)
        ctx["summary_count"][key] = ctx["summary_count"].get(key, 0) + 1

    train: list[dict] = []
    for it in train_items:
        options = []
        for tname in sorted(TEMPLATES):
            out = TEMPLATES[tname](it, ctx)
            if out is not None:
                options.append(out)
        for q, a in rng.sample(options, min(TEMPLATES_PER_FUNCTION, len(options))):
            train.append(row(q, a, it.qual))

    by_module: dict[str, list[Item]] = {}
    for it in train_items:
        by_module.setdefault(it.module, []).append(it)
    for mod in sorted(by_module):
        group = by_module[mod]
        listing = ", ".join(f"`{it.name}`" for it in group)
        train.append(
            row(
                f"List some public functions and classes of Python's `{mod}` module.",
                truncate(f"Among others, `{mod}` provides {listing}."),
                mod,
            )
        )
        for _ in range(min(COMPARE_PER_MODULE, len(group) // 2)):
            a, b = rng.sample(group, 2)
            a, b = sorted((a, b), key=lambda x: x.name)
            q = f"Compare `{a.qual}` and `{b.qual}`: how do they differ?"
            ans = f"`{a.qual}`: {a.summary} `{b.qual}`: {b.summary}"
            train.append(row(q, truncate(ans, 2 * MAX_ANSWER_CHARS), f"{a.qual}+{b.qual}"))

    # drop exact duplicate prompts (keep the first), then shuffle the order deterministically
    train = dedupe(train)
    held = dedupe([heldout_row(it) for it in held_items])
    rng.shuffle(train)
    rng.shuffle(held)
    stats = {
        "modules": len(MODULES),
        "items": len(items),
        "train_functions": len(train_items),
        "heldout_functions": len(held_items),
        "templates": len(TEMPLATES) + 2,
    }
    return train, held, stats


def dedupe(rows: list[dict]) -> list[dict]:
    seen, out = set(), []
    for r in rows:
        key = r["messages"][0]["content"]
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n")


README = """\
# Shipped prompt sets

`prompts.jsonl` and `heldout.jsonl` are slmkit's own small chat datasets for the quickstart.
They are generated, not hand-written, from material present on every Python install: the
docstrings and signatures of public functions and classes in {n_modules} stable standard-library
modules ({modules}).

Build command (from the repository root; stdlib only, deterministic for a given seed):

    python scripts/build_prompts.py --seed {seed}

Built with Python {pyver}. Docstrings change slightly between Python releases, so a rebuild
reproduces these files byte for byte only on the same Python minor version
(`tests/unit/test_prompt_sets.py` checks this and skips the comparison otherwise).

## Contents

- `prompts.jsonl`: {n_train} training rows about {n_train_fn} functions/classes, drawn from
  {n_templates} instruction templates (explain, summarise, when to use, example call,
  arguments, defaults, return value, class-or-function, which module, import, reverse
  lookup, tip, compare two functions of one module, list a module's contents). Answers are
  derived from the docstring (first paragraph or first sentence, whitespace and reST markup
  normalised, at most 400 characters) or from `inspect.signature`.
- `heldout.jsonl`: {n_held} rows, one per held-out function/class. The train/held-out split
  is by bare name (a seeded shuffle), so no function appears in both files. The prompt asks
  "In one sentence, what does the Python function (or class) `X` do?" and the
  reference answer is the docstring's first sentence verbatim (whitespace normalised), so it
  is real ground truth for ROUGE-L / contains metrics.

Each line is `{{"messages": [{{"role": "user", ...}}, {{"role": "assistant", ...}}], "source": "json.dumps"}}`;
compare rows use `"source": "mod.a+mod.b"` and module-listing rows `"source": "mod"`.

## License

The text is derived from CPython's docstrings, which are distributed under the Python Software
Foundation License (PSF License Agreement, https://docs.python.org/3/license.html).
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = ap.parse_args(argv)

    train, held, stats = build(args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out_dir / "prompts.jsonl", train)
    write_jsonl(args.out_dir / "heldout.jsonl", held)
    readme = README.format(
        n_modules=len(MODULES),
        modules=", ".join(f"`{m}`" for m in sorted(MODULES)),
        seed=args.seed,
        pyver=".".join(map(str, sys.version_info[:3])),
        n_train=len(train),
        n_train_fn=stats["train_functions"],
        n_templates=stats["templates"],
        n_held=len(held),
        n_held_fn=stats["heldout_functions"],
    )
    (args.out_dir / "PROMPTS_README.md").write_text(readme, encoding="utf-8")
    print(
        f"wrote {len(train)} training and {len(held)} held-out rows to {args.out_dir} "
        f"({stats['items']} items from {len(MODULES)} modules)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
