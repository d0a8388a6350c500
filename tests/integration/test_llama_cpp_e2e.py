"""A GGUF export end to end in llama.cpp itself (slow; skipped without llama-cpp-python).

The quickstart's shape without its distillation (the embedded teacher depth-pruned to 16 layers,
Q4_0) and the teacher itself (Q4_0) are exported through the CLI; the export is verified in
llama.cpp, the benchmark measures it there, and llama.cpp then serves the files as a user would:
chat template from the file's metadata, greedy generation that stops at EOS, and the same greedy
tokens as transformers' GGUF loader reads from the same file.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("llama_cpp")

PROMPTS = [
    "Write a Python function that returns the square of a number.",
    "What does the `len` function do in Python?",
    "Explain in one sentence what a list comprehension is.",
    "def is_even(n):",
    "The three primary colours are",
    "Summarise: the function opens a file, reads every line and returns them as a list.",
]


def _recipe(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""\
name: llamacpp-e2e
output_dir: {tmp_path / 'runs'}
seed: 0
teacher: {{model: builtin:smollm2-135m-instruct, dtype: float32}}
data:
  train: {{path: builtin:prompts, max_samples: 32, max_length: 128}}
  eval: {{path: builtin:heldout, max_samples: 8, max_length: 128}}
stages:
  - prune: {{method: depth, keep_layers: 16, calibration_samples: 16, calibration_max_length: 128, eval_samples: 0}}
  - export: {{formats: [gguf], gguf: {{type: Q4_0}}, verify: {{min_top1_quantized: 0.5}}}}
  - export: {{name: teacher_gguf, input: teacher, formats: [gguf], gguf: {{type: Q4_0}}}}
  - benchmark:
      models: [export]
      quality: [perplexity, teacher_agreement]
      primary_metric: perplexity
      eval_samples: 8
      max_new_tokens: 16
      general_text: null
      speed: {{backends: [llama_cpp], batch_sizes: [1], warmup: 1, repeats: 2, new_tokens: 16, concurrency: 0}}
""")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("llamacpp")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    res = subprocess.run([sys.executable, "-m", "slmkit", "run", str(_recipe(tmp))], capture_output=True, text=True,
                         env=env, timeout=1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    root = tmp / "runs" / "llamacpp-e2e"
    return {"root": root, "stdout": res.stdout, "stderr": res.stderr}


def _gguf(root: Path, stage: str) -> Path:
    return next((root / stage / "v1" / "gguf").glob("*.gguf"))


def _manifest(root: Path, stage: str) -> dict:
    return json.loads((root / stage / "v1" / "manifest.json").read_text())


def test_the_export_is_verified_in_llama_cpp(run):
    for stage in ("export", "teacher_gguf"):
        verification = _manifest(run["root"], stage)["details"]["formats"]["gguf"]["verification"]
        assert verification["runtime"] == "llama-cpp-python"
        assert verification["passed"] and verification["positions"] > 0


def test_the_benchmark_measures_llama_cpp_speed_and_quality(run):
    results = json.loads((run["root"] / "benchmark" / "v1" / "results.json").read_text())
    row = next(e for e in results["speed"] if e["model"] == "llamacpp-e2e/export/v1" and e["backend"] == "llama_cpp")
    assert row["status"] == "ok", row.get("reason")
    assert row["batches"][0]["decode_tok_s"]["median"] > 0
    variant = next(v for m in results["models"] if m["id"] == "llamacpp-e2e/export/v1" for v in m["variants"])
    assert variant["format"] == "gguf" and variant["quality_backend"] == "llama_cpp"
    assert math.isfinite(variant["quality"]["perplexity"]) and variant["quality"]["perplexity"] > 1
    assert 0 <= variant["quality"]["top1_agreement"] <= 1


def test_chat_template_and_eos_in_llama_cpp(run):
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    gguf = _gguf(run["root"], "teacher_gguf")
    tok = AutoTokenizer.from_pretrained(run["root"] / "source" / "v1")
    llm = Llama(model_path=str(gguf), n_ctx=1024, verbose=False)
    assert llm.metadata["tokenizer.chat_template"] == tok.chat_template
    assert int(llm.token_eos()) == tok.eos_token_id
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"]) if hasattr(ids, "keys") else list(ids)  # transformers 5 returns an encoding
    rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert llm.tokenize(rendered.encode(), add_bos=False, special=True) == ids  # the same prompt tokens
    answer = llm.create_chat_completion(messages=messages, max_tokens=48, temperature=0.0)
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "stop", choice  # stopped at EOS (<|im_end|>), not at max_tokens
    assert "Paris" in choice["message"]["content"]


def greedy_agreement(gguf: Path, prompts: list[str], new_tokens: int) -> tuple[float, int]:
    """Share of positions where llama.cpp's greedy token equals the one transformers' GGUF loader chose:
    the loader continues each prompt greedily, llama.cpp is fed those tokens (teacher forcing)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slmkit.runtimes import llama_cpp
    from slmkit.runtimes.base import Variant

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    lm = llama_cpp.load_lm(Variant("check", "gguf", gguf))
    same = total = 0
    for prompt in prompts:
        ids = tok(prompt).input_ids
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=False)[0].tolist()
        got = lm.logits([out])[0].argmax(-1).tolist()  # logits at position i predict token i + 1
        for i in range(len(ids), len(out)):
            same += int(got[i - 1] == out[i])
            total += 1
    return same / total, total


@pytest.mark.parametrize("stage", ["export", "teacher_gguf"])
def test_llama_cpp_chooses_the_greedy_tokens_of_transformers_gguf_loader(run, stage, record_property):
    agreement, positions = greedy_agreement(_gguf(run["root"], stage), PROMPTS, 32)
    record_property(f"{stage}_greedy_agreement", agreement)
    print(f"{stage}: llama.cpp matches transformers' GGUF loader at {agreement:.3f} of {positions} positions")
    assert positions == len(PROMPTS) * 32
    assert agreement >= 0.9
