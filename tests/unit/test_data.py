"""Data loading: formats, chat masking on the real SmolLM2 template, packing, clear errors."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from slmkit.data import collate, collate_prompts, fingerprint, load_examples
from slmkit.errors import InputError
from slmkit.recipe import DataSpec, parse_recipe


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer_dir):
    return AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


CHAT = [{"messages": [{"role": "user", "content": "Name a colour."},
                      {"role": "assistant", "content": "Blue is a colour."},
                      {"role": "user", "content": "Another?"},
                      {"role": "assistant", "content": "Green."}]}]


def test_chat_mask_covers_assistant_turns_only(tmp_path, tok):
    f = write_jsonl(tmp_path / "chat.jsonl", CHAT)
    [ex] = load_examples(DataSpec(path=str(f)), tok, base_dir=tmp_path)
    masked = tok.decode([t for t, m in zip(ex.input_ids, ex.loss_mask) if m])
    assert masked.replace("\n", "") == "Blue is a colour.<|im_end|>Green.<|im_end|>"
    unmasked = tok.decode([t for t, m in zip(ex.input_ids, ex.loss_mask) if not m])
    assert "Name a colour." in unmasked and "Another?" in unmasked and "Blue" not in unmasked
    assert ex.reference == "Green."
    prompt = tok.decode(ex.prompt_ids)
    assert prompt.endswith("<|im_start|>assistant\n") and "Blue is a colour." in prompt and "Green" not in prompt
    assert ex.input_ids[: len(ex.prompt_ids)] == ex.prompt_ids


def test_prompt_only_chat_rows_have_no_targets(tmp_path, tok):
    f = write_jsonl(tmp_path / "p.jsonl", [{"messages": [{"role": "user", "content": "Hi"}]}])
    [ex] = load_examples(DataSpec(path=str(f)), tok, base_dir=tmp_path)
    assert sum(ex.loss_mask) == 0 and ex.prompt_ids == ex.input_ids and ex.reference is None


def test_prompt_completion(tmp_path, tok):
    f = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "2+2=", "completion": " 4"}])
    [ex] = load_examples(DataSpec(path=str(f), format="prompt_completion"), tok, base_dir=tmp_path)
    n_prompt = len(tok("2+2=", add_special_tokens=False)["input_ids"])
    assert ex.loss_mask[:n_prompt] == [0] * n_prompt and all(ex.loss_mask[n_prompt:])
    assert ex.input_ids[-1] == tok.eos_token_id and tok.decode(ex.input_ids[n_prompt:-1]) == " 4"


def test_text_is_packed_into_blocks(tmp_path, tok):
    f = tmp_path / "t.txt"
    f.write_text("\n".join(f"line number {i} of a long document" for i in range(50)))
    examples = load_examples(DataSpec(path=str(f), format="text", max_length=32), tok, base_dir=tmp_path)
    total = sum(len(tok(f"line number {i} of a long document", add_special_tokens=False)["input_ids"]) + 1
                for i in range(50))
    assert sum(len(e.input_ids) for e in examples) == total
    assert all(len(e.input_ids) == 32 for e in examples[:-1]) and all(all(e.loss_mask) for e in examples)


def test_directory_csv_and_max_samples(tmp_path, tok):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.csv").write_text("prompt,completion\nhello,world\n")
    (d / "b.csv").write_text("prompt,completion\nfoo,bar\nbaz,qux\n")
    spec = DataSpec(path=str(d), format="prompt_completion", max_samples=2)
    assert [e.reference for e in load_examples(spec, tok, base_dir=tmp_path)] == ["world", "bar"]


def test_truncation(tmp_path, tok):
    f = write_jsonl(tmp_path / "c.jsonl", CHAT)
    [ex] = load_examples(DataSpec(path=str(f), max_length=12), tok, base_dir=tmp_path)
    assert len(ex.input_ids) == 12 == len(ex.loss_mask)


def test_builtin_prompt_sets_load(tok, tmp_path):
    ex = load_examples(DataSpec(path="builtin:heldout", max_samples=5), tok, base_dir=tmp_path)
    assert len(ex) == 5 and all(sum(e.loss_mask) > 0 and e.reference for e in ex)


@pytest.mark.parametrize("content,match", [
    (b"", "is empty"),
    (b'{"messages": [{"role": "user", "content": "ok"}]}\n{"text": "x"}\n', r"p\.jsonl:2: row has no `messages`"),
    (b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n', "line 1 is not valid UTF-8"),
    (b'{"messages": "not a list"}\n', "must be a list"),
])
def test_bad_data_is_named(tmp_path, tok, content, match):
    f = tmp_path / "p.jsonl"
    f.write_bytes(content)
    with pytest.raises(InputError, match=match):
        load_examples(DataSpec(path=str(f)), tok, base_dir=tmp_path)


def test_collate_pads_and_masks():
    from slmkit.data import Example

    a, b = Example([1, 2, 3], [0, 1, 1], prompt_ids=[1]), Example([4, 5], [0, 1], prompt_ids=[4, 5])
    batch = collate([a, b], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 5, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["loss_mask"].tolist() == [[0, 1, 1], [0, 1, 0]]
    left = collate_prompts([a, b], pad_id=0)
    assert left["input_ids"].tolist() == [[0, 1], [4, 5]] and left["attention_mask"].tolist() == [[0, 1], [1, 1]]


def test_fingerprint_follows_file_content(tmp_path):
    f = write_jsonl(tmp_path / "c.jsonl", CHAT)
    text = f"name: x\nteacher: {{model: m}}\ndata: {{train: {{path: {f}}}}}\nstages: [{{export: {{}}}}]\n"
    r = parse_recipe(text, base_dir=tmp_path)
    before = fingerprint(r, tmp_path)
    assert fingerprint(r, tmp_path) == before
    f.write_text(f.read_text().replace("Blue", "Red"))
    assert fingerprint(r, tmp_path) != before
