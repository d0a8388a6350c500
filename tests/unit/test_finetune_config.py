"""The finetune section: defaults, torch-free validation problems, and which stage reads what."""

from pathlib import Path

import pytest

from slmkit.errors import RecipeError
from slmkit.finetune.config import FullFinetuneConfig, LoraFinetuneConfig, lora_target_problem, model_type_of
from slmkit.pipeline import becomes_teacher, default_input
from slmkit.recipe import parse_recipe

HEAD = """\
name: r
teacher: {model: builtin:smollm2-135m-instruct}
task: ranking
data:
  train: {path: builtin:ranking_train}
"""


def recipe(stages: str, head: str = HEAD):
    return parse_recipe(head + "stages:\n" + stages)


def test_method_defaults_to_full_and_lora_has_its_own_learning_rate():
    r = recipe("  - finetune: {max_steps: 3}\n  - finetune: {method: lora}\n")
    full, lora = (s.config for s in r.stages)
    assert isinstance(full, FullFinetuneConfig) and full.lr == 5e-5 and full.as_teacher is None
    assert isinstance(lora, LoraFinetuneConfig) and lora.lr == 1e-3 and lora.r == 16


def test_first_finetune_reads_and_replaces_the_teacher_and_the_next_stage_reads_the_student():
    r = recipe("  - finetune: {}\n  - distill: {method: score_kd}\n  - benchmark: {}\n",
               HEAD + "student: {model: builtin:all-minilm-l6-v2}\n")
    tune, distill, bench = r.stages
    assert default_input(r, tune) == "teacher" and becomes_teacher(r, tune)
    assert default_input(r, distill) == "student" and not becomes_teacher(r, distill)
    assert default_input(r, bench) == "distill"


def test_a_finetune_later_in_the_chain_is_not_the_teacher_unless_asked():
    r = recipe("  - prune: {method: depth, keep_layers: 20, eval_samples: 0}\n  - finetune: {}\n"
               "  - finetune: {name: again, input: teacher, as_teacher: false}\n  - finetune: {name: t, as_teacher: true}\n")
    prune, tune, again, t = r.stages
    assert default_input(r, tune) == "prune" and not becomes_teacher(r, tune)
    assert not becomes_teacher(r, again)
    assert becomes_teacher(r, t) and default_input(r, t) == "again"


def test_validation_names_a_missing_train_split_and_unknown_lora_targets(tmp_path):
    head = HEAD.replace("data:\n  train: {path: builtin:ranking_train}\n", "")
    with pytest.raises(RecipeError) as e:
        recipe("  - finetune: {method: lora, target_modules: [query]}\n", head)
    text = str(e.value)
    assert "stages[0].finetune (line 5): finetune trains on labelled data: add data.train" in text
    assert "['query'] are not linear layers of a llama model" in text and "'q_proj'" in text


def test_model_type_is_read_without_loading(tmp_path: Path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model_type": "qwen2"}')
    assert model_type_of("m", tmp_path) == "qwen2"
    assert model_type_of("builtin:all-minilm-l6-v2", tmp_path) == "bert"
    assert model_type_of("some/hub-id", tmp_path) is None  # checked at the stage's start instead
    assert lora_target_problem(LoraFinetuneConfig(target_modules=["c_attn"]), None) is None
    assert lora_target_problem(LoraFinetuneConfig(target_modules=["query"]), "bert") is None
