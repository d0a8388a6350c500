"""Training, evaluation and calibration data: loading through `datasets`, chat rendering, masks.

An :class:`Example` is one tokenized sequence. ``loss_mask[t] == 1`` means token ``t`` is a
target (predicted from the logits at ``t - 1``): assistant turns for chat data, the completion
for prompt/completion data, every token for text. ``prompt_ids`` is what a model is given to
generate a response (chat rendered with the generation prompt); empty for text.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from slmkit.errors import InputError


@dataclass
class Example:
    input_ids: list[int]
    loss_mask: list[int]
    prompt_ids: list[int] = field(default_factory=list)
    source: str = ""  # "file:row" for error messages and provenance
    reference: str | None = None  # the dataset's own response text, when it has one
    question: str | None = None  # the last user turn (or the prompt) as text: trivial-answer baselines


def collate(examples: list[Example], pad_id: int, *, side: str = "right"):
    """Pad a list of examples into tensors: input_ids, attention_mask, loss_mask (all [B, T])."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        cols = slice(0, n) if side == "right" else slice(width - n, width)
        ids[i, cols] = torch.tensor(e.input_ids)
        attn[i, cols] = 1
        mask[i, cols] = torch.tensor(e.loss_mask)
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": mask}


def collate_prompts(examples: list[Example], pad_id: int):
    """Left-padded prompt batch for generation: input_ids, attention_mask."""
    prompts = [Example(input_ids=e.prompt_ids, loss_mask=[0] * len(e.prompt_ids)) for e in examples]
    batch = collate(prompts, pad_id, side="left")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


# ---------------------------------------------------------------------------------------------
# loading


SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def load_split(recipe, split: str, tokenizer, *, max_length: int | None = None,
               base_dir: Path | None = None) -> list[Example]:
    """Tokenized examples of ``recipe.data.<split>``; calibration falls back to train."""
    spec = getattr(recipe.data, split)
    if spec is None and split == "calibration":
        spec = recipe.data.train
    if spec is None:
        raise InputError(f"the recipe has no `data.{split}` section, which this stage needs")
    return load_examples(spec, tokenizer, max_length=max_length, base_dir=base_dir or Path.cwd())


def load_examples(spec, tokenizer, *, max_length: int | None = None, base_dir: Path) -> list[Example]:
    rows, where = read_rows(spec, base_dir)
    limit = max_length or spec.max_length
    if spec.format == "text":
        return pack_text(rows, spec.text_field, tokenizer, limit, where)
    build = _chat_example if spec.format == "chat" else _prompt_completion_example
    return [build(row, spec, tokenizer, limit, f"{where}:{i + 1}") for i, row in enumerate(rows)]


BUILTIN_DATA = {"builtin:prompts": "prompts.jsonl", "builtin:heldout": "heldout.jsonl",
                "builtin:ranking_train": "ranking_train.jsonl", "builtin:ranking_eval": "ranking_eval.jsonl",
                "builtin:prose": "prose.jsonl"}


def resolve_data_path(path: str, base_dir: Path) -> Path:
    """A data path of a recipe: a shipped `builtin:` set, or a file relative to the recipe."""
    if path in BUILTIN_DATA:
        return Path(__file__).parent / "data_files" / BUILTIN_DATA[path]
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def data_files(spec, base_dir: Path) -> list[Path]:
    """The local files behind a spec (sorted), validated for a supported type."""
    return files_at(resolve_data_path(spec.path, base_dir))


def files_at(root: Path, suffixes: dict[str, str] = SUFFIXES) -> list[Path]:
    """The data files at ``root`` (a file or a directory of them), all of one supported type."""
    if not root.exists():
        raise InputError(f"data file {root} does not exist")
    files = sorted(p for p in root.iterdir() if p.suffix in suffixes) if root.is_dir() else [root]
    if not files:
        raise InputError(f"data directory {root} holds no {'/'.join(suffixes)} files")
    kinds = {suffixes.get(p.suffix) for p in files}
    if None in kinds or len(kinds) > 1:
        raise InputError(f"data {root}: unsupported data format; expected files of one type among "
                         f"{', '.join(suffixes)}, got {sorted({p.suffix or '(none)' for p in files})}")
    return files


def read_rows(spec, base_dir: Path) -> tuple[list[dict], str]:
    """Rows of a data spec as dicts, through `datasets`; clear errors for empty or non-UTF-8 files."""
    if spec.hub is not None:
        return _hub_rows(spec.hub, spec.max_samples)
    return read_local_rows(resolve_data_path(spec.path, base_dir), limit=spec.max_samples)


def read_local_rows(root: Path, suffixes: dict[str, str] = SUFFIXES, limit: int | None = None
                    ) -> tuple[list[dict], str]:
    """Rows of a local file or directory (no network), checked for emptiness and UTF-8."""
    import datasets

    datasets.disable_progress_bars()
    files = files_at(Path(root), suffixes)
    for f in files:
        _check_text_file(f)
    where = str(files[0]) if len(files) == 1 else str(files[0].parent)
    try:
        ds = datasets.load_dataset(suffixes[files[0].suffix], data_files=[str(f) for f in files], split="train")
    except Exception as e:
        raise InputError(f"{where}: cannot parse the data ({e.__class__.__name__}: {e})") from None
    rows = _first(ds, limit)
    if not rows:
        raise InputError(f"{where}: the data set is empty")
    return rows, where


def _first(ds, limit: int | None) -> list[dict]:
    return list(ds if limit is None else ds.select(range(min(limit, len(ds)))))


def _hub_rows(hub, limit: int | None) -> tuple[list[dict], str]:
    import datasets

    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(hub.name, hub.config, split=hub.split)
    except Exception as e:  # offline miss, unknown dataset or split
        raise InputError(f"cannot load hub dataset {hub.name!r}: {e}") from None
    rows = _first(ds, limit)
    where = f"{hub.name}[{hub.split}]"
    if not rows:
        raise InputError(f"{where}: the data set is empty")
    return rows, where


def _check_text_file(path: Path) -> None:
    if path.suffix == ".parquet":
        return
    raw = path.read_bytes()
    if not raw.strip():
        raise InputError(f"{path}: the file is empty")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InputError(f"{path}: line {line} is not valid UTF-8 (byte {e.start}); save the file as UTF-8") from None


def _field(row: dict, name: str, where: str):
    if row.get(name) in (None, ""):
        raise InputError(f"{where}: row has no `{name}` field (columns: {', '.join(row) or 'none'})")
    return row[name]


def _chat_example(row, spec, tokenizer, limit: int, where: str) -> Example:
    messages = _field(row, spec.messages_field, where)
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m
                                                 for m in messages):
        raise InputError(f"{where}: `{spec.messages_field}` must be a list of {{role, content}} messages")
    last_answer = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    prompt_msgs = messages if last_answer is None else messages[:last_answer]
    question = next((str(m["content"]) for m in reversed(prompt_msgs) if m["role"] == "user"), None)
    prompt_text = render_chat(tokenizer, prompt_msgs, generation_prompt=True)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"][:limit]
    if last_answer is None:  # a prompt-only row: the teacher or student writes the response
        return Example(input_ids=list(prompt_ids), loss_mask=[0] * len(prompt_ids), prompt_ids=list(prompt_ids),
                       source=where, question=question)
    text, spans = _assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"][:limit]
    mask = [int(any(a <= start < b for a, b in spans)) for start, _ in enc["offset_mapping"][:limit]]
    return Example(input_ids=ids, loss_mask=mask, prompt_ids=list(prompt_ids), source=where,
                   reference=messages[last_answer]["content"], question=question)


def render_chat(tokenizer, messages: list[dict], *, generation_prompt: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("chat data needs a tokenizer with a chat template; use format: prompt_completion or text")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _assistant_spans(tokenizer, messages) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant turn (with its end tag)."""
    full = render_chat(tokenizer, messages, generation_prompt=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render_chat(tokenizer, messages[:i], generation_prompt=True)
        upto = render_chat(tokenizer, messages[: i + 1], generation_prompt=False)
        if full.startswith(before) and full.startswith(upto):
            spans.append((len(before), len(upto)))
        else:  # a template that re-renders earlier turns: fall back to locating the text itself
            start = full.find(m["content"], spans[-1][1] if spans else 0)
            if start < 0:
                raise InputError(f"cannot locate assistant turn {i} in the rendered chat")
            spans.append((start, start + len(m["content"])))
    return full, spans


def _prompt_completion_example(row, spec, tokenizer, limit: int, where: str) -> Example:
    prompt = str(_field(row, spec.prompt_field, where))
    completion = str(_field(row, spec.completion_field, where))
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        c_ids = c_ids + [tokenizer.eos_token_id]
    ids = (p_ids + c_ids)[:limit]
    mask = ([0] * len(p_ids) + [1] * len(c_ids))[:limit]
    return Example(input_ids=ids, loss_mask=mask, prompt_ids=p_ids[:limit], source=where, reference=completion,
                   question=prompt)


def pack_text(rows, field: str, tokenizer, block: int, where: str) -> list[Example]:
    """Raw text rows tokenized into one stream (EOS between rows) and cut into blocks of ``block`` tokens."""
    stream: list[int] = []
    for i, row in enumerate(rows):
        stream += tokenizer(str(_field(row, field, f"{where}:{i + 1}")), add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            stream.append(tokenizer.eos_token_id)
    if len(stream) < 2:
        raise InputError(f"{where}: the text holds fewer than 2 tokens")
    blocks = [stream[i: i + block] for i in range(0, len(stream), block)]
    blocks = [b for b in blocks if len(b) >= 2]
    return [Example(input_ids=b, loss_mask=[1] * len(b), source=f"{where}#block{j}") for j, b in enumerate(blocks)]


def fingerprint(recipe, base_dir: Path) -> str:
    """A hash of every data spec and the bytes of its local files: part of each stage's cache key."""
    from slmkit.artifacts import sha256_file

    h = hashlib.sha256()
    for split in ("train", "eval", "calibration"):
        spec = getattr(recipe.data, split)
        if spec is None:
            continue
        h.update(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode())
        if spec.path is not None:
            try:
                for f in data_files(spec, base_dir):
                    h.update(sha256_file(f).encode())
            except InputError:
                pass  # reported by validation; nothing to hash
    return h.hexdigest()[:16]
