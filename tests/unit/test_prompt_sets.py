"""The shipped prompt sets (slmkit/data_files) parse, are disjoint, and rebuild reproducibly."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "slmkit" / "data_files"
SCRIPT = ROOT / "scripts" / "build_prompts.py"
FILES = ("prompts.jsonl", "heldout.jsonl")


def load(name: str) -> list[dict]:
    rows = []
    with (DATA / name).open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            assert line.strip(), f"{name}:{i} is blank"
            rows.append(json.loads(line))
    return rows


def shipped_modules() -> set[str]:
    """The script's MODULES list, read without importing it (no bytecode written into the tree)."""
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MODULES" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError("MODULES not found in build_prompts.py")


def functions(row: dict, modules: set[str]) -> set[str]:
    """Qualified names a row is about ("mod.a+mod.b" for compare rows); module-listing rows have none."""
    return {s for s in row["source"].split("+") if s and s not in modules}


@pytest.fixture(scope="module")
def train() -> list[dict]:
    return load("prompts.jsonl")


@pytest.fixture(scope="module")
def heldout() -> list[dict]:
    return load("heldout.jsonl")


def test_counts(train, heldout):
    assert len(train) >= 400
    assert len(heldout) >= 100


@pytest.mark.parametrize("name", FILES)
def test_rows_are_chat_pairs(name):
    for i, row in enumerate(load(name), 1):
        msgs = row["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant"], f"{name}:{i}"
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in msgs), f"{name}:{i}"
        assert isinstance(row["source"], str) and row["source"], f"{name}:{i}"


@pytest.mark.parametrize("name", FILES)
def test_no_duplicate_rows(name):
    rows = load(name)
    prompts = [r["messages"][0]["content"] for r in rows]
    assert len(prompts) == len(set(prompts)), "duplicate user prompts"
    lines = [json.dumps(r, sort_keys=True) for r in rows]
    assert len(lines) == len(set(lines)), "duplicate rows"


def test_heldout_is_one_row_per_function(heldout):
    sources = [r["source"] for r in heldout]
    assert len(sources) == len(set(sources))
    for r in heldout:
        assert "+" not in r["source"]
        assert f"`{r['source']}`" in r["messages"][0]["content"]


def test_no_function_in_both_files(train, heldout):
    held = {r["source"] for r in heldout}
    held_bare = {q.rsplit(".", 1)[1] for q in held}
    modules = shipped_modules()
    train_fns = set().union(*(functions(r, modules) for r in train))
    assert not held & train_fns
    # the split is by bare name: `os.path.join` and `shlex.join` land on the same side
    train_bare = {q.rsplit(".", 1)[1] for q in train_fns}
    assert not held_bare & train_bare
    # a held-out function is never the subject of a training prompt
    for r in train:
        prompt = r["messages"][0]["content"]
        assert not any(f"`{q}`" in prompt for q in held), prompt


def test_readme_records_build():
    text = (DATA / "PROMPTS_README.md").read_text(encoding="utf-8")
    assert re.search(r"Built with Python \d+\.\d+\.\d+", text)
    assert "python scripts/build_prompts.py" in text
    assert "PSF" in text or "Python Software Foundation" in text


def test_rebuild_reproduces_shipped_files(tmp_path):
    text = (DATA / "PROMPTS_README.md").read_text(encoding="utf-8")
    built = re.search(r"Built with Python (\d+)\.(\d+)\.\d+", text)
    seed = re.search(r"build_prompts\.py --seed (\d+)", text)
    assert built and seed
    if tuple(map(int, built.groups())) != sys.version_info[:2]:
        pytest.skip(
            f"shipped files were built with Python {built.group(1)}.{built.group(2)}; stdlib docstrings "
            f"differ on {sys.version_info[0]}.{sys.version_info[1]}, so a byte-exact rebuild is not expected"
        )
    subprocess.run(
        [sys.executable, str(SCRIPT), "--out-dir", str(tmp_path), "--seed", seed.group(1)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), (
            f"{name} differs from a rebuild: run `python scripts/build_prompts.py` and commit the result"
        )
