"""The shipped prose set (slmkit/data_files/prose.jsonl) parses, is disjoint from the prompt
sets, has the size PROSE_README.md documents, and its README names the licence."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "slmkit" / "data_files"
README = DATA / "PROSE_README.md"
PROMPT_FILES = ("prompts.jsonl", "heldout.jsonl")
TOKEN_RANGE = (30_000, 60_000)  # as PROSE_README.md and scripts/build_prose.py state it
NGRAM = 8


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    out = []
    with (DATA / "prose.jsonl").open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            assert line.strip(), f"prose.jsonl:{i} is blank"
            out.append(json.loads(line))
    return out


def test_rows_have_text_and_source(rows):
    assert 150 <= len(rows) <= 250
    for i, row in enumerate(rows, 1):
        assert set(row) == {"text", "source"}, f"row {i}: keys {sorted(row)}"
        assert isinstance(row["text"], str) and row["text"].strip(), f"row {i}: empty text"
        assert isinstance(row["source"], str) and row["source"].strip(), f"row {i}: empty source"
    assert len({r["text"] for r in rows}) == len(rows), "duplicate passages"


def test_passages_are_paragraph_sized_prose(rows):
    for row in rows:
        assert 60 <= len(row["text"].split()) <= 250, row["source"]
        assert "gutenberg" not in row["text"].lower(), f"{row['source']}: boilerplate left in"
        assert "_" not in row["text"], f"{row['source']}: italics markup left in"


def test_no_passage_shares_an_8gram_with_the_prompt_sets(rows):
    banned: set[tuple[str, ...]] = set()
    for name in PROMPT_FILES:
        for line in (DATA / name).read_text(encoding="utf-8").splitlines():
            for message in json.loads(line)["messages"]:
                banned |= ngrams(message["content"])
    assert banned, "the prompt sets yielded no 8-grams; the check would be vacuous"
    shared = {row["source"]: sorted(ngrams(row["text"]) & banned)[:3] for row in rows}
    assert not {k: v for k, v in shared.items() if v}


def test_token_count_is_in_range_and_as_documented(rows, smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    tokens = sum(len(tok(r["text"], add_special_tokens=False)["input_ids"]) for r in rows)
    assert TOKEN_RANGE[0] <= tokens <= TOKEN_RANGE[1]
    documented = re.search(r"\*\*([\d,]+) tokens\*\*", README.read_text(encoding="utf-8"))
    assert documented, "PROSE_README.md does not state the token count as **N tokens**"
    assert int(documented.group(1).replace(",", "")) == tokens


def test_readme_names_the_licence_and_the_build_command():
    text = README.read_text(encoding="utf-8")
    licence = text.split("## License", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"public domain", licence, re.IGNORECASE)
    assert "scripts/build_prose.py" in text
    assert "apt-get download r-cran-janeaustenr=1.0.0-1 r-cran-tokenizers=0.3.0-1" in text
