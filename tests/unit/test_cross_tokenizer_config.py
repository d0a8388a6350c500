"""loss.cross_tokenizer in the recipe schema: what it cannot be combined with, and the gallery recipe."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slmkit.errors import RecipeError
from slmkit.recipe import load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[2]
GALLERY = "recipes/gallery/phi3.5-to-qwen2.5-cross-tokenizer-gpu.yaml"


def _recipe(stage: str) -> str:
    return textwrap.dedent(f"""\
        name: r
        teacher: {{model: builtin:smollm2-135m-instruct}}
        data:
          train: {{path: builtin:prompts}}
        stages:
          - distill: {stage}
    """)


def test_both_modes_validate_and_default_to_none():
    for mode in ("uld", "align"):
        r = parse_recipe(_recipe(f"{{loss: {{cross_tokenizer: {mode}}}, data: sequence_kd}}"))
        assert r.stages[0].config.loss.cross_tokenizer == mode
    assert parse_recipe(_recipe("{max_steps: 5}")).stages[0].config.loss.cross_tokenizer is None


@pytest.mark.parametrize("extra, named", [
    ("data: offline_teacher", "data: offline_teacher"),
    ("on_policy: {fraction: 0.5}", "on_policy"),
    ("loss: {cross_tokenizer: align, hidden: {kind: mse}}", "loss.hidden"),
    ("loss: {cross_tokenizer: align, tokens: all}", "loss.tokens: all"),
])
def test_combinations_that_need_one_vocabulary_are_refused_at_validation(extra, named):
    stage = f"{{{extra}}}" if extra.startswith("loss") else f"{{loss: {{cross_tokenizer: align}}, {extra}}}"
    with pytest.raises(RecipeError) as e:
        parse_recipe(_recipe(stage))
    assert "stages[0].distill" in str(e.value) and "cross_tokenizer: align cannot be combined" in str(e.value)
    assert named in str(e.value)


def test_an_unknown_mode_names_the_choices():
    with pytest.raises(RecipeError, match="uld.*align"):
        parse_recipe(_recipe("{loss: {cross_tokenizer: minED}}"))


def test_the_gallery_recipe_distills_across_families_and_validates_without_torch():
    recipe = load_recipe(ROOT / GALLERY)
    distills = [s for s in recipe.stages if s.kind == "distill"]
    assert [s.config.loss.cross_tokenizer for s in distills] == [None, "align"]
    assert distills[0].config.data == "sequence_kd" and distills[0].config.loss.kd_weight == 0
    assert recipe.teacher.model.split("/")[0] != recipe.student.model.split("/")[0]  # two model families
    code = ("import sys\nfrom slmkit.cli import main\nsys.argv = ['slmkit', 'validate', sys.argv[1]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('torch imported:', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / GALLERY)], capture_output=True, text=True,
                         check=False, cwd=ROOT, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "torch imported: False" in out.stdout, out.stdout
