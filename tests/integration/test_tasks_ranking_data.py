"""The quickstart ranking data: built from the standard library, one relevant candidate per group."""

import importlib.util
import json
import sys
from collections import defaultdict
from pathlib import Path

from slmkit.tasks.data import load_rows

ROOT = Path(__file__).resolve().parents[2]


def builder():
    spec = importlib.util.spec_from_file_location("build_ranking_data", ROOT / "scripts" / "build_ranking_data.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def by_group(rows):
    out = defaultdict(list)
    for r in rows:
        out[r.group].append(r)
    return out


def test_builder_is_deterministic_and_splits_functions(tmp_path):
    b = builder()
    b.main(["--out", str(tmp_path / "a"), "--train-groups", "30", "--eval-groups", "10"])
    b.main(["--out", str(tmp_path / "b"), "--train-groups", "30", "--eval-groups", "10"])
    for name in ("ranking_train.jsonl", "ranking_eval.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    train = load_rows(tmp_path / "a" / "ranking_train.jsonl", [0, 1], require_labels=True)
    evals = load_rows(tmp_path / "a" / "ranking_eval.jsonl", [0, 1], require_labels=True)
    assert len(by_group(train)) == 30 and len(by_group(evals)) == 10
    positives = lambda rows: {r.item for r in rows if r.label == 1}
    assert not positives(train) & positives(evals)  # eval queries are about unseen functions
    b.main(["--out", str(tmp_path / "c"), "--seed", "1", "--train-groups", "30", "--eval-groups", "10"])
    assert (tmp_path / "c" / "ranking_train.jsonl").read_bytes() != (tmp_path / "a" / "ranking_train.jsonl").read_bytes()


def test_shipped_files_have_one_true_candidate_per_group():
    data = ROOT / "slmkit" / "data_files"
    meta = json.loads((data / "ranking_meta.json").read_text())
    for split, cands in (("train", 8), ("eval", 10)):
        rows = load_rows(data / f"ranking_{split}.jsonl", [0, 1], require_labels=True)
        assert len(rows) == meta[f"{split}_rows"]
        for group in by_group(rows).values():
            assert len(group) == cands and sum(r.label for r in group) == 1
            assert len({r.item for r in group}) == cands  # no duplicate candidates
            assert len({r.context for r in group}) == 1


def test_ground_truth_is_real_docstrings():
    import heapq
    import inspect

    b = builder()
    funcs = {f.signature.split("(")[0]: f for f in b.collect()}
    assert len(funcs) > 300
    top = funcs["heapq.nlargest"]
    assert top.summary == " ".join(inspect.getdoc(heapq.nlargest).split("\n\n")[0].split())
    assert top.signature == f"heapq.nlargest{inspect.signature(heapq.nlargest)}"
