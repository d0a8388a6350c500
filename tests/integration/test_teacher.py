"""The embedded teacher: the built-in GGUF becomes a `source` artifact that answers a fixed prompt."""

from __future__ import annotations

import json

import torch

from slmkit.artifacts import Store, read_manifest
from slmkit.models import load_model, load_tokenizer
from slmkit.pipeline import ensure_source
from slmkit.progress import Reporter
from slmkit.recipe import parse_recipe


def test_builtin_teacher_converts_once_and_answers(tmp_path):
    recipe = parse_recipe("name: t\nteacher: {model: builtin:smollm2-135m-instruct}\nstages: [{export: {}}]\n")
    store = Store(tmp_path / "t")
    path = ensure_source(store, "source", recipe.teacher.model, "float32", recipe, Reporter(level=0))
    assert ensure_source(store, "source", recipe.teacher.model, "float32", recipe, Reporter(level=0)) == path
    assert len(store.versions("source")) == 1
    manifest = read_manifest(path)
    assert 134_000_000 < manifest["metrics"]["params"] < 135_000_000
    assert json.loads((path / "config.json").read_text())["num_hidden_layers"] == 30
    assert "quantization_config" not in json.loads((path / "config.json").read_text())

    tok, model = load_tokenizer(path), load_model(path)
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    reply = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert reply.strip(), "the teacher answers with non-empty text"
    assert "Paris" in reply
