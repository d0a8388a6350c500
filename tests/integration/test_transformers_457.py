"""A directory slmkit saved loads in transformers 4.57, the last 4.x release, with the same logits.

Slow: it builds its own virtual environment once (torch 2.13 CPU + transformers 4.57) under
``$SLMKIT_TEST_CACHE`` (default ``~/.cache/slmkit-tests``) and reuses it on later runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

OLD = "transformers==4.57.*"
READER = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer, __version__
path, text = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
ids = tok(text)["input_ids"]
chat = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0]
print(json.dumps({"version": __version__, "ids": ids, "chat": chat, "logits": logits.tolist(),
                  "rope_theta": getattr(model.config, "rope_theta", None)}))
"""


def _old_python() -> Path:
    root = Path(os.environ.get("SLMKIT_TEST_CACHE", Path.home() / ".cache" / "slmkit-tests")) / "transformers-4.57"
    python = root / "bin" / "python"
    if not (root / ".ready").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run(pip + ["torch==2.13.0"], check=True)  # the CPU build; a looser pin pulls CUDA
        subprocess.run(pip + [OLD, "safetensors", "jinja2"], check=True)
        (root / ".ready").touch()
    return python


def test_saved_directory_loads_in_transformers_457(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = "Summarise: the river flows north."
    out = subprocess.run([str(_old_python()), "-c", READER, str(tiny_llama_dir), text],
                         capture_output=True, text=True, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    old = json.loads(out.stdout.strip().splitlines()[-1])
    assert old["version"].startswith("4.57")
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    assert old["ids"] == tok(text)["input_ids"]
    assert old["chat"] == tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                  add_generation_prompt=True)
    assert old["rope_theta"] == model.config.rope_parameters["rope_theta"]
    with torch.no_grad():
        new = model(torch.tensor([old["ids"]])).logits[0]
    assert torch.allclose(torch.tensor(old["logits"]), new, atol=1e-4)
