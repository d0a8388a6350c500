"""Recipe schema of the fine-tune stage: supervised training of a model on the recipe's labelled data.

The point is a teacher that can do the task before anything is distilled from it: a stage that
reads the teacher (the first stage, or ``input: teacher``) hands its output to every later
stage as THE teacher (``as_teacher``), so distillation matches the fine-tuned scores and the
benchmark measures retention against them. Sample stages::

    stages:
      - finetune: {method: lora, max_steps: 60, r: 16, lr: 1.0e-3, bf16: true}   # then the teacher
      - distill: {method: score_kd, max_steps: 100}

    - finetune: {method: full, max_steps: 200, lr: 5.0e-5}

What is learnt: for a ranking / classification recipe the task's labels (``label_loss``:
pointwise cross-entropy of the verbalizer or head logits, or listwise over each group's
candidates); for a generation recipe the responses of ``data.train`` (chat / prompt_completion;
every token of text data). ``method: lora`` trains low-rank adapters (``peft``) and merges them
into the written weights: the artifact is a plain Hugging Face directory that transformers loads
without peft.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from slmkit.schema import StrictModel

# linear layers LoRA adapts by default, per config.json model_type (attention and MLP projections)
LORA_MODULES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2"),
                    ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    "bert": ("query", "key", "value", "dense"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
}
BUILTIN_MODEL_TYPES = {"builtin:smollm2-135m-instruct": "llama", "builtin:all-minilm-l6-v2": "bert"}


class _FinetuneBase(StrictModel):
    max_steps: int = Field(100, ge=1, description="Optimizer steps.")
    batch_size: int = Field(
        32, ge=1, description="Rows per step for scorers (rounded up to whole groups); sequences per step for "
        "generation.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(10, ge=0, description="Linear warm-up steps, then linear (scorers) or cosine "
                              "(generation) decay.")
    bf16: bool = Field(False, description="bfloat16 autocast with fp32 master weights (AMX CPUs and GPUs).")
    checkpoint_every: int = Field(50, ge=1, description="Steps between resumable checkpoints in the work dir.")
    label_loss: Literal["pointwise", "listwise"] = Field(
        "pointwise", description="Scorers: pointwise (cross-entropy of each row's label) or listwise "
        "(cross-entropy of each group's softmax over candidates against its relevant ones; ranking).")
    max_length: int = Field(512, ge=8, description="Generation: longest training sequence in tokens (scorers use "
                            "`task.max_length`).")
    as_teacher: bool | None = Field(
        None, description="Later stages use this stage's output as the teacher (distillation targets, the "
        "benchmark's teacher row, cache keys). Default: true when the stage reads the teacher.")


class FullFinetuneConfig(_FinetuneBase):
    """Every weight of the input model is trained."""

    method: Literal["full"] = Field("full", description="Train every weight.")
    lr: float = Field(5e-5, gt=0, description="Peak AdamW learning rate.")


class LoraFinetuneConfig(_FinetuneBase):
    """Low-rank adapters on the chosen linear layers (Hu et al. 2021), merged into the saved weights."""

    method: Literal["lora"] = Field("lora", description="Train LoRA adapters and merge them.")
    lr: float = Field(1e-3, gt=0, description="Peak AdamW learning rate (adapters take larger steps than full "
                      "fine-tuning).")
    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: float = Field(32.0, gt=0, description="Adapter scale numerator: the update is (alpha / r) * B A.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapters' input.")
    target_modules: list[str] | None = Field(
        None, description="Names of the linear layers to adapt (e.g. `[q_proj, v_proj]`). Default: the "
        "attention and MLP projections of the architecture (llama, mistral, qwen2/3, gemma, phi3, bert, gpt2).")
    layers: list[int] | None = Field(
        None, description="Decoder / encoder layer indices to adapt (default: all). Adapting only the top "
        "layers skips the backward pass through the others.")


def _default_method(value):
    return {"method": "full", **value} if isinstance(value, dict) and "method" not in value else value


FinetuneConfig = Annotated[
    FullFinetuneConfig | LoraFinetuneConfig, Field(discriminator="method"), BeforeValidator(_default_method)
]


# ---------------------------------------------------------------- validation (torch-free)


def model_type_of(ref: str, base_dir: Path) -> str | None:
    """config.json's model_type of a model ref, read without loading anything; None when that would
    take a download or a GGUF read (the stage checks the loaded model instead, before writing)."""
    if ref in BUILTIN_MODEL_TYPES:
        return BUILTIN_MODEL_TYPES[ref]
    path = Path(ref).expanduser()
    path = path if path.is_absolute() else base_dir / path
    try:
        return json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None


def lora_target_problem(cfg: LoraFinetuneConfig, model_type: str | None) -> str | None:
    """Why the LoRA targets do not fit the architecture, or None (unknown architectures pass here)."""
    known = LORA_MODULES.get(model_type or "")
    if known is None:
        return None
    missing = [m for m in cfg.target_modules or () if m not in known]
    if missing:
        return (f"LoRA target module(s) {missing} are not linear layers of a {model_type} model; its "
                f"adaptable layers are {list(known)}")
    return None


def finetune_problems(recipe, base_dir: Path) -> list[tuple[tuple, str]]:
    """(YAML path, message) of each fine-tune stage the recipe cannot run (checked at validation, exit 2)."""
    out = []
    for s in recipe.stages:
        if s.kind != "finetune" or s.config is None:
            continue
        at = ("stages", s._index, s.kind)
        if recipe.data.train is None:
            out.append((at, "finetune trains on labelled data: add data.train (for a ranking / classification "
                            "task, rows with a label column; for generation, chat or prompt_completion data)"))
        if isinstance(s.config, LoraFinetuneConfig) and importlib.util.find_spec("peft") is None:
            out.append((at + ("method",), "method: lora needs peft (a dependency of slmkit): pip install "
                                          "peft, or use method: full"))
        ref = _source_read(recipe, s)
        if isinstance(s.config, LoraFinetuneConfig) and ref is not None:
            problem = lora_target_problem(s.config, model_type_of(ref, base_dir))
            if problem:
                out.append((at + ("target_modules",), problem))
    return out


def _source_read(recipe, stage) -> str | None:
    """The model ref a stage reads when that is a source model (the teacher, or a student given by ref)."""
    first = recipe.stages.index(stage) == 0
    if stage.input == "teacher" or (stage.input is None and first):
        return recipe.teacher.model
    if stage.input == "student" and recipe.student is not None:
        return recipe.student.model or recipe.teacher.model  # a student built from the teacher shares its layers
    return None
