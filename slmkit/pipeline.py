"""Running a recipe: order stages, resolve inputs, reuse cached artifacts, commit new ones.

The flow of ``slmkit run``::

    load_recipe -> Store(output_dir/name) -> source artifacts (teacher, student)
      -> for each stage: resolve input -> cache key -> reuse | run(ctx) -> commit

A stage's cache key covers its resolved config, the content hash of its inputs (and the
teacher's), the data fingerprint, the seed and the slmkit version; any change makes a new
version, ``--force`` always does. A stage that fails commits nothing; its work directory
(checkpoints) stays so that the same command resumes.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from slmkit import __version__
from slmkit.artifacts import (
    MANIFEST,
    Store,
    artifact_hash,
    base_manifest,
    content_hash,
    file_hashes,
    hash_json,
    model_card,
    read_manifest,
    safe_component,
    sha256_file,
)
from slmkit.benchmark.gates import failure_lines, failure_message
from slmkit.context import StageContext, StageOutput
from slmkit.errors import GateFailed, InputError, SlmkitError
from slmkit.progress import Reporter
from slmkit.recipe import Recipe, StageSpec, dump_recipe, stage_config_dump
from slmkit.stages import STAGE_KINDS


@dataclass
class RunOptions:
    recipe_path: Path | None = None
    output_dir: Path | None = None
    force: bool = False
    only_kind: str | None = None  # `slmkit distill RECIPE` runs only the distill stages
    input_override: Path | None = None


@dataclass
class StageResult:
    name: str
    kind: str
    path: Path
    cached: bool
    manifest: dict = field(default_factory=dict)


def store_for(recipe: Recipe, opts: RunOptions) -> Store:
    root = Path(opts.output_dir or recipe.output_dir)
    return Store(root / safe_component(recipe.name, "recipe name"))


class Processes:
    """Multi-process runs (`accelerate launch -m slmkit ...`): rank 0 writes, the others follow.

    Distill stages train on every process (Accelerate shards the data); every other stage, and the
    conversion of source models, runs on rank 0 while the rest wait and then read its artifact.
    """

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self._state = None
        if self.world > 1:
            import torch
            from accelerate import PartialState

            # on CPU, Accelerate forms the (gloo) process group only when asked for cpu explicitly
            self._state = PartialState(cpu=not torch.cuda.is_available())

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self._state is not None:
            self._state.wait_for_everyone()


def run_recipe(recipe: Recipe, opts: RunOptions, reporter: Reporter) -> list[StageResult]:
    store = store_for(recipe, opts)
    procs = Processes()
    if procs.main:
        for stale in store.clean_stale():
            reporter.debug(f"removed stale temporary directory {stale}")
    _seed(recipe.seed)
    if procs.main:
        teacher = ensure_source(store, "source", recipe.teacher.model, recipe.teacher.dtype, recipe, reporter)
        start = ensure_student(store, recipe, teacher, reporter) if recipe.student else teacher
    procs.barrier()
    if not procs.main:  # the sources exist now: find them without converting again
        teacher = ensure_source(store, "source", recipe.teacher.model, recipe.teacher.dtype, recipe, reporter)
        start = ensure_student(store, recipe, teacher, reporter) if recipe.student else teacher
    selected = [s for s in recipe.stages if opts.only_kind in (None, s.kind)]
    if not selected:
        raise InputError(f"the recipe has no `{opts.only_kind}` stage")
    done: dict[str, StageResult] = {}
    sources = {"teacher": teacher, "student": start}
    for stage in recipe.stages[: recipe.stages.index(selected[-1]) + 1]:
        if stage in selected:
            input_path = resolve_input(recipe, stage, store, done, sources, opts)
            done[stage.name] = run_stage(recipe, stage, input_path, sources["teacher"], store, done, opts, reporter,
                                         procs)
        if becomes_teacher(recipe, stage):
            sources = hand_over(recipe, sources, _teacher_artifact(stage, store, done))
            reporter.info(f"[{stage.name}] {sources['teacher']} is the teacher of the stages after it")
    failed = failed_gates(list(done.values()))
    if failed:
        raise GateFailed(failure_message(failed))
    return list(done.values())


def failed_gates(results: list[StageResult]) -> list[str]:
    """Each missed gate of the run's benchmark stages, read from their committed (or cached) manifests."""
    out = []
    benches = [r for r in results if r.kind == "benchmark"]
    for r in benches:
        lines = failure_lines(r.manifest.get("details", {}).get("gates", []))
        out += [f"[{r.name}] {line}" if len(benches) > 1 else line for line in lines]
    return out


# ---------------------------------------------------------------------------------------------
# the teacher hand-over: a fine-tune stage whose output later stages use as THE teacher


def default_input(recipe: Recipe, stage: StageSpec) -> str:
    """What a stage without `input` reads: the previous stage that stays on the model chain (a
    fine-tune that became the teacher does not), else `teacher` for a fine-tune, else `student`."""
    index = recipe.stages.index(stage)
    previous = next((s for s in reversed(recipe.stages[:index]) if not becomes_teacher(recipe, s)), None)
    if previous is not None:
        return previous.name
    return "teacher" if stage.kind == "finetune" else "student"


def becomes_teacher(recipe: Recipe, stage: StageSpec) -> bool:
    """A fine-tune stage with `as_teacher` (default: when it reads the teacher) hands its output on as the teacher."""
    if stage.kind != "finetune" or stage.config is None:
        return False
    chosen = stage.config.as_teacher
    return (stage.input or default_input(recipe, stage)) == "teacher" if chosen is None else chosen


def hand_over(recipe: Recipe, sources: dict[str, Path], new: Path) -> dict[str, Path]:
    """The sources after a fine-tune that became the teacher: ``new`` is the teacher, and the start of
    the model chain too when the recipe names no student (the chain then starts from the teacher)."""
    return {"teacher": new, "student": sources["student"] if recipe.student is not None else new}


def _teacher_artifact(stage: StageSpec, store: Store, done: dict) -> Path:
    if stage.name in done:
        return done[stage.name].path
    latest = store.latest(stage.name)  # `slmkit distill RECIPE`: the fine-tuned teacher of an earlier run
    if latest is None:
        raise InputError(f"stage {stage.name!r} fine-tunes the teacher of the later stages and has no artifact "
                         f"in {store.root} yet: run it first (`slmkit run` or `slmkit finetune`)")
    return latest


def resolve_input(recipe: Recipe, stage: StageSpec, store: Store, done: dict, sources: dict[str, Path],
                  opts: RunOptions) -> Path:
    """The artifact a stage reads: --input, its `input`, or the previous stage's output."""
    if opts.input_override is not None and opts.only_kind:
        return _artifact_path(opts.input_override, "--input")
    index = [s.name for s in recipe.stages].index(stage.name)
    ref = stage.input if stage.input is not None else default_input(recipe, stage)
    if ref == "student" and stage.input is None:
        return sources["student"]
    if ref in sources:
        if ref == "student" and recipe.student is None:
            raise InputError(f"stage {stage.name!r} reads `student`, but the recipe names no student")
        return sources[ref]
    if "/" in ref or ref.startswith("."):
        return _artifact_path(Path(ref), f"stages[{index}].input")
    if ref in done:
        return done[ref].path
    latest = store.latest(ref)
    if latest is None:
        raise InputError(f"stage {stage.name!r} reads the output of stage {ref!r}, which has no artifact "
                         f"in {store.root} yet: run it first (`slmkit run`) or pass --input ARTIFACT")
    return latest


def _artifact_path(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise InputError(f"{what}: {path} is not a directory")
    if not (path / MANIFEST).exists() and not (path / "config.json").exists():
        raise InputError(f"{what}: {path} is neither an slmkit artifact nor a model directory")
    return path


def run_stage(recipe: Recipe, stage: StageSpec, input_path: Path, teacher: Path, store: Store, done: dict,
              opts: RunOptions, reporter: Reporter, procs: Processes | None = None) -> StageResult:
    extras = {"artifacts": _earlier_artifacts(recipe, stage, store, done)} if stage.kind == "benchmark" else {}
    key = stage_key(recipe, stage, input_path, teacher, extras, opts)
    if not opts.force and (found := store.find_cached(stage.name, key)):
        reporter.info(f"[{stage.name}] cached: reusing {found} (same config and inputs; --force to rebuild)")
        return StageResult(stage.name, stage.kind, found, True, read_manifest(found))
    procs = procs or Processes()
    if not procs.main and stage.kind != "distill":
        procs.barrier()  # rank 0 runs it; read what it committed
        return _follow(store, stage, key)
    result = _execute_stage(recipe, stage, input_path, teacher, store, key, extras, opts, reporter, procs)
    procs.barrier()
    return result if procs.main else _follow(store, stage, key)


def stage_key(recipe: Recipe, stage: StageSpec, input_path: Path, teacher: Path, extras: dict,
              opts: RunOptions) -> str:
    """The cache key: resolved config, input and teacher content, data, seed, task, slmkit version."""
    from slmkit.data import fingerprint

    base_dir = opts.recipe_path.parent if opts.recipe_path else Path.cwd()
    return hash_json({
        "stage": stage_config_dump(stage), "input": artifact_hash(input_path), "teacher": artifact_hash(teacher),
        "data": fingerprint(recipe, base_dir), "seed": recipe.seed, "task": recipe.task_json(), "slmkit": __version__,
        "others": [a["manifest"].get("content_hash") for a in extras.get("artifacts", [])],
    })


def _follow(store: Store, stage: StageSpec, key: str) -> StageResult:
    path = store.find_cached(stage.name, key)
    if path is None:
        raise SlmkitError(f"[{stage.name}] rank 0 did not commit an artifact; see its log")
    return StageResult(stage.name, stage.kind, path, False, read_manifest(path))


def _execute_stage(recipe, stage, input_path, teacher, store: Store, key: str, extras: dict, opts: RunOptions,
                   reporter: Reporter, procs: Processes) -> StageResult | None:
    reporter.info(f"[{stage.name}] running {stage.kind} on {input_path}")
    run = STAGE_KINDS[stage.kind].run_function(recipe.predictive is not None)
    tmp = store.begin(stage.name)
    work = store.work_dir(stage.name, key)
    ctx = StageContext(recipe=recipe, stage=stage, out_dir=tmp, input_dir=input_path,
                       input_manifest=read_manifest(input_path) if (input_path / MANIFEST).exists() else None,
                       teacher_dir=teacher, run_dir=store.root, reporter=reporter, work_dir=work, store=store,
                       recipe_path=opts.recipe_path, extras=extras)
    started = time.time()
    try:
        output = run(ctx) or StageOutput()
    except BaseException:
        store.abort(tmp)
        raise
    if not procs.main:  # training ran here too, but only rank 0 writes the artifact
        store.abort(tmp)
        return None
    manifest = _manifest(recipe, stage, key, started, input_path, teacher, output)
    path = store.commit(stage.name, tmp, manifest, recipe_yaml=_recipe_history(recipe, input_path),
                        card=model_card(manifest, output.model_card_notes))
    shutil.rmtree(work, ignore_errors=True)
    reporter.info(f"[{stage.name}] wrote {path} ({time.time() - started:.1f}s)")
    return StageResult(stage.name, stage.kind, path, False, read_manifest(path))


def _manifest(recipe, stage, key, started, input_path, teacher, output: StageOutput) -> dict:
    inputs = [_input_entry("input", input_path), _input_entry("teacher", teacher)]
    return base_manifest(stage.name, stage.kind, key, started) | {
        "artifact_type": output.artifact_type, "config": stage_config_dump(stage),
        "recipe": recipe.name, "recipe_hash": recipe.content_hash(), "seed": recipe.seed, "task": recipe.task_json(),
        "inputs": inputs, "metrics": output.metrics, "details": output.details,
    }


def _input_entry(role: str, path: Path) -> dict:
    manifest = read_manifest(path) if (path / MANIFEST).exists() else {}
    return {"role": role, "id": manifest.get("id"), "path": str(path), "content_hash": artifact_hash(path)}


def _recipe_history(recipe: Recipe, input_path: Path) -> str:
    text = dump_recipe(recipe)
    parent = input_path / "recipe.yaml"
    if parent.exists() and parent.read_text().strip():
        pid = read_manifest(input_path).get("id")
        history = "\n".join(f"# {line}" if line else "#" for line in parent.read_text().splitlines())
        text += f"\n# ---- history: the recipe that made the input {pid} ----\n{history}\n"
    return text


def _earlier_artifacts(recipe: Recipe, stage: StageSpec, store: Store, done: dict) -> list[dict]:
    out = []
    for s in recipe.stages[: recipe.stages.index(stage)]:
        if becomes_teacher(recipe, s):
            continue  # measured as the teacher itself
        path = done[s.name].path if s.name in done else store.latest(s.name)
        if path is not None:
            out.append({"id": read_manifest(path).get("id"), "stage": s.name, "kind": s.kind, "path": path,
                        "manifest": read_manifest(path)})
    return out


# ---------------------------------------------------------------------------------------------
# source artifacts: the teacher (and a student given by the recipe) in HF format, made once


def source_key(ref: str, dtype: str, extra=None) -> str:
    from slmkit.models import resolve_ref

    kind, where = resolve_ref(ref)
    if kind == "gguf":
        ident = sha256_file(Path(where))
    elif kind == "dir":
        ident = content_hash(file_hashes(Path(where)))
    else:
        ident = ref
    return hash_json({"ref": ident, "dtype": dtype, "extra": extra, "slmkit": __version__})


def ensure_source(store: Store, name: str, ref: str, dtype: str, recipe: Recipe, reporter: Reporter,
                  *, force: bool = False, build=None, extra=None) -> Path:
    """The HF-format copy of a model ref as artifact `<name>/v<N>`, converted only once."""
    key = source_key(ref, dtype, extra)
    if found := store.find_cached(name, key):
        reporter.debug(f"[{name}] reusing {found}")
        return found
    from slmkit.models import load_ref, save_model

    reporter.info(f"[{name}] converting {ref} to a {dtype} Hugging Face directory (once; later runs reuse it)")
    started = time.time()
    tmp = store.begin(name)
    try:
        model, tokenizer = (build or (lambda: load_ref(ref, dtype, trust_remote_code=recipe.teacher.trust_remote_code,
                                                         revision=recipe.teacher.revision)))()
        save_model(model, tokenizer, tmp)
        from slmkit.models import count_params

        metrics = {"params": count_params(model)}
    except BaseException:
        store.abort(tmp)
        raise
    manifest = base_manifest(name, "source", key, started) | {
        "artifact_type": "model", "config": {"model": ref, "dtype": dtype, **({"init": extra} if extra else {})},
        "recipe": recipe.name, "inputs": [], "metrics": metrics}
    path = store.commit(name, tmp, manifest, recipe_yaml=dump_recipe(recipe))
    reporter.info(f"[{name}] wrote {path}")
    return path


def _student_source(recipe: Recipe, teacher: Path) -> tuple[str, dict | None]:
    """(ref, extra) of the `student` artifact: its own model ref, or the teacher plus the init spec."""
    student = recipe.student
    if student.model is not None:
        return student.model, None
    return str(teacher), student.init.model_dump(mode="json", by_alias=True)


def student_source_key(recipe: Recipe, teacher: Path) -> str:
    """The cache key of the `student` artifact :func:`ensure_student` builds (the plan needs it too)."""
    ref, extra = _student_source(recipe, teacher)
    return source_key(ref, recipe.student.dtype, extra)


def ensure_student(store: Store, recipe: Recipe, teacher: Path, reporter: Reporter) -> Path:
    student = recipe.student
    ref, extra = _student_source(recipe, teacher)
    build = None if extra is None else (lambda: init_student(teacher, student.init, student.dtype))
    return ensure_source(store, "student", ref, student.dtype, recipe, reporter, build=build, extra=extra)


def init_student(teacher: Path, init, dtype: str):
    """A student built from the teacher: selected layers (with weights) or a fresh config (random)."""
    from transformers import AutoModelForCausalLM

    from slmkit.models import load_model, load_tokenizer, torch_dtype

    tokenizer = load_tokenizer(teacher)
    if init.keep_layers is not None:
        from slmkit.prune.surgery import keep_layers

        return keep_layers(load_model(teacher, dtype), init.keep_layers), tokenizer
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(teacher))
    for k, v in init.config.items():
        if not hasattr(config, k):
            raise InputError(f"student.init.config.{k}: {config.model_type} configs have no such field")
        setattr(config, k, v)
    return AutoModelForCausalLM.from_config(config, dtype=torch_dtype(dtype)), tokenizer


def _seed(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


# ---------------------------------------------------------------------------------------------
# --dry-run: the plan, with estimated sizes, running nothing


def plan_recipe(recipe: Recipe, opts: RunOptions) -> list[dict]:
    """Stages, inputs, outputs (the cached version that would be reused, or the new one), sizes."""
    from slmkit.models import config_params, load_config

    store = store_for(recipe, opts)
    config = load_config(recipe.teacher.model)
    teacher_params = config_params(config)
    bytes_per = 2 if recipe.teacher.dtype in ("bfloat16", "float16") else 4
    teacher = store.find_cached("source", source_key(recipe.teacher.model, recipe.teacher.dtype))
    rows = [{"stage": "source", "kind": "source", "input": recipe.teacher.model,
             "output": _planned_output(store, "source", teacher), "params": teacher_params,
             "memory_gb": round(teacher_params * bytes_per / 2**30, 2), "notes": "teacher in HF format"}]
    cached = _plan_cache(recipe, store, teacher, opts)
    params = teacher_params
    for stage in recipe.stages:
        if opts.only_kind not in (None, stage.kind):
            continue
        notes = "the teacher of the stages after it" if becomes_teacher(recipe, stage) else ""
        if stage.kind == "prune":
            from slmkit.prune.stage import plan as prune_plan

            planned = prune_plan(stage.config, config)
            params, config, notes = planned["params"], planned.get("model_config", config), planned.get("summary", "")
        memory = {"distill": teacher_params * bytes_per + params * 16, "finetune": params * 16}.get(stage.kind,
                                                                                                  params * 4)
        ref = stage.input or default_input(recipe, stage)
        rows.append({"stage": stage.name, "kind": stage.kind,
                     "input": "source" if ref == "teacher" or (ref == "student" and not recipe.student) else ref,
                     "output": _planned_output(store, stage.name, cached.get(stage.name)), "params": params,
                     "memory_gb": round(memory / 2**30, 2), "notes": notes})
    return rows


def _plan_cache(recipe: Recipe, store: Store, teacher: Path | None, opts: RunOptions) -> dict[str, Path]:
    """Stages a run would reuse: those whose inputs are all cached and whose own key is committed."""
    if teacher is None or opts.force:
        return {}  # the teacher is converted first, so everything after it is new
    student = teacher
    if recipe.student is not None:
        student = store.find_cached("student", student_source_key(recipe, teacher))
        if student is None:
            return {}  # the student is built first, so everything after it is new
    sources, done, reused = {"teacher": teacher, "student": student}, {}, {}
    for stage in recipe.stages:
        if opts.only_kind not in (None, stage.kind):
            if becomes_teacher(recipe, stage):  # not run: its latest artifact is the teacher, as in run_recipe
                if store.latest(stage.name) is None:
                    break
                sources = hand_over(recipe, sources, store.latest(stage.name))
            continue
        try:
            input_path = resolve_input(recipe, stage, store, done, sources, opts)
        except InputError:
            break
        ref = stage.input if stage.input is not None else default_input(recipe, stage)
        if ref in {s.name for s in recipe.stages} and ref not in reused and opts.only_kind is None:
            break  # its input is rebuilt in this run
        extras = {"artifacts": _earlier_artifacts(recipe, stage, store, done)} if stage.kind == "benchmark" else {}
        found = store.find_cached(stage.name, stage_key(recipe, stage, input_path, sources["teacher"], extras, opts))
        if found is None:
            break  # a new fine-tuned teacher changes every later key too: nothing after it is reused
        reused[stage.name] = found
        done[stage.name] = StageResult(stage.name, stage.kind, found, True, read_manifest(found))
        if becomes_teacher(recipe, stage):
            sources = hand_over(recipe, sources, found)
    return reused


def _planned_output(store: Store, stage: str, cached: Path | None) -> str:
    if cached is not None:
        return f"reuse {cached}"
    latest = store.latest(stage)
    n = int(latest.name[1:]) + 1 if latest else 1
    return f"new {store.root / stage}/v{n}"
