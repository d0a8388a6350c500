"""Build the quickstart ranking task from the standard library: real ground truth, no download.

    .venv/bin/python scripts/build_ranking_data.py            # writes slmkit/data_files/ranking_{train,eval}.jsonl
    .venv/bin/python scripts/build_ranking_data.py --out /tmp/data --seed 1 --train-groups 400

Each group is one query, the one-line summary of a standard-library function's docstring
("Join two or more pathname components..."), and candidates written as qualified names with
signatures ("os.path.join(a, *p)"): the documented function is the one relevant candidate,
the others are negatives, half drawn from the same module (the hard ones) and half from
anywhere. Train and eval use disjoint sets of functions, so eval measures generalisation
rather than recall of training pairs. Output is deterministic for a given seed and Python
version (the shipped files record the version they were built with).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# modules present on every CPython install, with plenty of documented functions
MODULES = (
    "base64", "binascii", "bisect", "calendar", "codecs", "colorsys", "copy", "csv", "difflib", "fnmatch",
    "functools", "glob", "gzip", "hashlib", "heapq", "html", "inspect", "ipaddress", "itertools", "json",
    "keyword", "math", "operator", "os", "os.path", "platform", "pprint", "random", "re", "secrets", "shlex",
    "shutil", "statistics", "string", "struct", "tempfile", "textwrap", "time", "unicodedata", "urllib.parse",
    "uuid", "zlib",
)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "slmkit" / "data_files"


@dataclass(frozen=True)
class Function:
    module: str
    name: str
    signature: str  # "os.path.join(a, *p)"
    summary: str  # first docstring paragraph


def summary_line(obj) -> str | None:
    """The docstring's first paragraph if it reads as a summary (not a signature, not too short or long)."""
    doc = inspect.getdoc(obj)
    if not doc:
        return None
    # the first paragraph, joined: first lines are often cut mid-sentence by line wrapping
    line = " ".join(doc.strip().split("\n\n")[0].split())
    name = getattr(obj, "__name__", "")
    if len(line) < 20 or len(line) > 160 or line.startswith(name + "(") or "->" in line:
        return None
    return line


def functions_of(module_name: str) -> list[Function]:
    """Public functions of a module that have a signature and a usable summary."""
    module = importlib.import_module(module_name)
    out = []
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isbuiltin(obj)):
            continue
        home = getattr(obj, "__module__", None) or module_name
        if module_name != "os.path" and home.split(".")[0] not in (module_name.split(".")[0], "_" + module_name,
                                                                   "posix", "nt"):
            continue  # re-exports belong to their home module, not here
        try:
            # object reprs in defaults carry memory addresses: drop them so output is reproducible
            sig = re.sub(r" at 0x[0-9a-f]+", "", str(inspect.signature(obj)))
        except (TypeError, ValueError):
            continue
        summary = summary_line(obj)
        if summary:
            out.append(Function(module_name, name, f"{module_name}.{name}{sig}", summary))
    return out


def collect() -> list[Function]:
    """All usable functions; a summary shared by two functions is ambiguous and dropped."""
    seen, funcs = set(), []
    for m in MODULES:
        for f in functions_of(m):
            if f.signature not in seen:
                seen.add(f.signature)
                funcs.append(f)
    counts = Counter(f.summary for f in funcs)
    return [f for f in funcs if counts[f.summary] == 1]


def negatives(target: Function, pool: list[Function], n: int, rng: random.Random) -> list[Function]:
    """Half from the target's module (hard negatives), the rest from the whole pool."""
    others = [f for f in pool if f is not target]
    same = [f for f in others if f.module == target.module]
    picked = rng.sample(same, min(len(same), n // 2))
    rest = [f for f in others if f not in picked]
    return picked + rng.sample(rest, n - len(picked))


def groups(pool: list[Function], n_groups: int, n_candidates: int, prefix: str, rng: random.Random) -> list[dict]:
    """Rows of up to ``n_groups`` groups, candidates in random order, one relevant per group."""
    rows = []
    for g, target in enumerate(pool[:n_groups]):
        cands = [target] + negatives(target, pool, n_candidates - 1, rng)
        rng.shuffle(cands)
        gid = f"{prefix}-{g:04d}"
        rows += [{"group": gid, "context": target.summary, "item": c.signature, "label": int(c is target)}
                 for c in cands]
    return rows


def build(seed: int, train_groups: int | None, eval_groups: int | None, train_cands: int, eval_cands: int):
    funcs = sorted(collect(), key=lambda f: f.signature)
    rng = random.Random(seed)
    rng.shuffle(funcs)
    n_eval = max(eval_groups or 0, len(funcs) // 5)  # eval functions are never seen in training
    eval_pool, train_pool = funcs[:n_eval], funcs[n_eval:]
    return (groups(train_pool, train_groups or len(train_pool), train_cands, "train", rng),
            groups(eval_pool, eval_groups or len(eval_pool), eval_cands, "eval", rng), len(funcs))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for ranking_{train,eval}.jsonl")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-groups", type=int, default=None, help="default: one per training function")
    p.add_argument("--eval-groups", type=int, default=None, help="default: one per eval function")
    p.add_argument("--train-candidates", type=int, default=8)
    p.add_argument("--eval-candidates", type=int, default=10)
    a = p.parse_args(argv)
    train, evals, n = build(a.seed, a.train_groups, a.eval_groups, a.train_candidates, a.eval_candidates)
    write_jsonl(a.out / "ranking_train.jsonl", train)
    write_jsonl(a.out / "ranking_eval.jsonl", evals)
    meta = {"python": sys.version.split()[0], "seed": a.seed, "functions": n,
            "train_rows": len(train), "eval_rows": len(evals), "builder": "scripts/build_ranking_data.py"}
    (a.out / "ranking_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
