"""The distillation training loop, built on Accelerate (DDP / FSDP across processes).

One optimizer step sees a *global* batch of ``batch_size * grad_accum * world_size`` examples
chosen by ``(seed, step)`` alone, so the data order does not depend on how many processes run
it, and a resumed run sees exactly the batches the interrupted run would have seen. The loss is
a sum over the global batch's counted tokens divided by their number (not a mean of per-process
means), so 1 process and N processes compute the same gradient.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slmkit.data import Example, collate
from slmkit.distill import losses as L
from slmkit.distill.config import DistillConfig
from slmkit.errors import SlmkitError
from slmkit.machine import training_allocator

# --- pure helpers ---------------------------------------------------------------------------


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``min_ratio`` at ``total`` steps."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def batch_indices(n: int, global_batch: int, step: int, seed: int) -> list[int]:
    """Example indices of optimizer step ``step``: a stream of per-epoch permutations."""
    out: list[int] = []
    pos = step * global_batch
    while len(out) < global_batch:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        take = perm[offset : offset + global_batch - len(out)].tolist()
        out.extend(take)
        pos += len(take)
    return out


def select_targets(input_ids: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat row indices of positions whose *next* token counts, and those next tokens."""
    b, t = input_ids.shape
    counted = loss_mask[:, 1:].bool()
    rows = torch.arange(b, device=input_ids.device)[:, None] * t + torch.arange(t - 1, device=input_ids.device)
    return rows[counted], input_ids[:, 1:][counted]


def use_compile(setting: bool | str, vocab: int, device: torch.device) -> bool:
    """Resolve ``loss.compile``: auto compiles only where the vocabulary makes it pay off.

    Below ~16k tokens the elementwise loss work is small and the one-off compilation (tens of
    seconds on a small CPU) would cost more than it saves: tiny test models stay eager.
    """
    if setting != "auto":
        return bool(setting)
    if vocab < 16384:
        return False
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return has_triton()
    return device.type == "cpu" and any(shutil.which(c) for c in ("g++", "clang++", "c++"))


def use_layer_compile(cfg: DistillConfig, vocab: int, device: torch.device, processes: int) -> bool:
    """Resolve ``compile_layers``: auto compiles where it is known to pay off and to be safe."""
    if cfg.compile_layers != "auto":
        return bool(cfg.compile_layers)
    if device.type != "cpu" or processes > 1 or cfg.gradient_checkpointing or cfg.on_policy.fraction > 0:
        return False  # untested under FSDP/DDP here; checkpointed layers and KV-cache decoding recompile
    if cfg.quant_aware is not None:
        return False  # the fake-quantized weights are recomputed outside the layer's graph
    return use_compile("auto", vocab, device)


def compile_decoder_layers(model: nn.Module) -> list[nn.Module]:
    """``Module.compile`` every decoder layer (the classes named in ``_no_split_modules``).

    The layers share their code, so one compiled graph serves them all (parameters are graph
    inputs); shapes start static and become dynamic after the first new sequence length. The
    state dict keys do not change, so saving works as before. Returns the layers compiled.

    ``emulate_precision_casts``: the fused kernels round to bf16 wherever eager autocast does.
    Without it inductor keeps fused intermediates (SiLU * up, the norms) in fp32, which moved
    the first distillation loss of a 15-layer student by 1.4e-3 relative; with it the compiled
    step stays within 3e-5 of the eager one at the same speed.
    """
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    for m in layers:
        m.compile(options={"emulate_precision_casts": True})
    return layers


def uncompile(layers: list[nn.Module]) -> None:
    """Back to eager (``Module.compile`` keeps the compiled call beside the module's own)."""
    for m in layers:
        m._compiled_call_impl = None


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


# --- the student side: everything that holds trainable parameters ---------------------------


class DistillModule(nn.Module):
    """The student plus the hidden-state projections; its forward returns the summed loss.

    The loss is computed inside ``forward`` (not on the caller's side) so that DDP and FSDP see
    every parameter, the lm_head included, used within the wrapped forward.
    """

    def __init__(
        self, student: nn.Module, vocab: int, layer_map: dict[int, int] | None, teacher_width: int, hidden_kind="mse"
    ):
        super().__init__()
        self.hidden_kind = hidden_kind
        self.student = student
        self.vocab = vocab  # rows shared with the teacher: padding rows beyond it are ignored
        self.layer_map = dict(sorted((layer_map or {}).items()))
        width = student.config.hidden_size
        need_proj = bool(self.layer_map) and width != teacher_width
        self.proj = nn.ModuleList(
            [nn.Linear(width, teacher_width, bias=False) for _ in self.layer_map] if need_proj else []
        )

    def forward(self, inputs: dict, sel, targets, teacher, t_hidden, spec, chunk, dtype, stats, compile):
        out = self.student.base_model(**model_inputs(inputs), output_hidden_states=bool(self.layer_map))
        h = out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])[sel]
        head = self.student.get_output_embeddings()
        bias = None if head.bias is None else head.bias[: self.vocab]
        loss = L.chunked_head_loss(
            h, head.weight[: self.vocab], teacher, targets, spec,
            bias=bias, chunk_size=chunk, compute_dtype=dtype, stats=stats, compile=compile,
        )
        if not self.layer_map:
            return loss, None
        s_h = [out.hidden_states[i].reshape(-1, h.shape[-1])[sel] for i in self.layer_map]
        return loss, L.hidden_state_loss(s_h, t_hidden, self.hidden_kind, list(self.proj) or None)


@torch.no_grad()
def teacher_states(teacher, batch, sel, layers: list[int], vocab: int):
    """The teacher's final hidden states (and mapped layers) at the selected rows."""
    out = teacher.base_model(  # use_cache=False: no KV cache is built for a single forward
        **model_inputs(batch), output_hidden_states=bool(layers), use_cache=False,
    )
    last = out.last_hidden_state
    h = last.reshape(-1, last.shape[-1])[sel]
    head = teacher.get_output_embeddings()
    bias = None if head.bias is None else head.bias[:vocab]
    t_hidden = [out.hidden_states[i].reshape(-1, last.shape[-1])[sel] for i in layers]
    return L.TeacherLogits(h, head.weight[:vocab], bias), t_hidden


# --- batches ----------------------------------------------------------------------------------


@dataclass
class Batch:
    tensors: dict[str, torch.Tensor]
    sel: torch.Tensor
    targets: torch.Tensor
    topk: L.TeacherTopK | None = None  # offline teacher rows aligned with ``sel``
    cross: Any = None  # the teacher's own tokens of the same text (cross-tokenizer distillation)

    @property
    def tokens(self) -> int:
        return int(self.sel.numel())


def bucket_width(longest: int, cap: int | None = None, multiple: int = 64) -> int:
    """Row width for a batch whose longest sequence is ``longest``: a power of two times ``multiple``.

    Compiled decoder layers see a handful of widths instead of one per batch (each new shape is a
    guard miss, and after the recompile limit a layer falls back to eager); ``cap`` (the recipe's
    max_length rounded up to ``multiple``) keeps the last bucket from doubling past it.
    """
    width = multiple
    while width < longest:
        width *= 2
    if cap is not None:
        width = min(width, max(longest, -(-cap // multiple) * multiple))
    return width


def pack_rows(lengths: list[int], width: int) -> list[tuple[int, int]]:
    """First-fit decreasing: (row, offset) of each sequence in rows of ``width`` tokens."""
    free: list[int] = []
    place = [(0, 0)] * len(lengths)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, f in enumerate(free) if f >= lengths[i]), None)
        if row is None:
            row = len(free)
            free.append(width)
        place[i] = (row, width - free[row])
        free[row] -= lengths[i]
    return place


def pack_examples(examples: list[Example], pad_id: int, width: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Several examples per row, each with its own positions 0..n-1, so attention stays inside it.

    There is no attention mask: transformers reads sequence boundaries off ``position_ids`` (a
    position that does not follow its neighbour starts a new sequence) and builds a block-causal
    mask; the padding at a row's end is a sequence of its own that nothing counted attends to.
    ``sel`` lists counted positions example by example, in each example's order: the same rows,
    targets and order as the unpacked batch, so the loss (and cached teacher rows) line up.
    """
    place = pack_rows([len(e.input_ids) for e in examples], width)
    n_rows = 1 + max(r for r, _ in place)
    ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    pos = torch.arange(width).repeat(n_rows, 1)
    mask = torch.zeros((n_rows, width), dtype=torch.long)
    sel, targets = [], []
    for e, (r, o) in zip(examples, place):
        n = len(e.input_ids)
        ids[r, o : o + n] = torch.tensor(e.input_ids)
        mask[r, o : o + n] = torch.tensor(e.loss_mask)
        pos[r, o : o + n] = torch.arange(n)
        counted = [t for t in range(n - 1) if e.loss_mask[t + 1]]
        sel += [r * width + o + t for t in counted]
        targets += [e.input_ids[t + 1] for t in counted]
    for r in range(n_rows):  # the tail of a row restarts at 0: a padding "sequence" of its own
        end = max([o + len(e.input_ids) for e, (rr, o) in zip(examples, place) if rr == r])
        pos[r, end:] = torch.arange(width - end)
    tensors = {"input_ids": ids, "attention_mask": None, "position_ids": pos, "loss_mask": mask}
    return tensors, torch.tensor(sel, dtype=torch.long), torch.tensor(targets, dtype=torch.long)


def make_batch(examples: list[Example], pad_id: int, device, topk_rows: list | None = None, *,
               pack: bool = False, width_cap: int | None = None) -> Batch:
    """Tensors of a micro-batch: padded to a bucketed width, one example per row or packed."""
    width = bucket_width(max(len(e.input_ids) for e in examples), width_cap)
    # one example per row either way: padding masks keep the causal fast path of the attention kernels
    if pack and 1 + max(r for r, _ in pack_rows([len(e.input_ids) for e in examples], width)) < len(examples):
        t, sel, targets = pack_examples(examples, pad_id, width)
    else:
        t = collate(examples, pad_id)
        t = {k: torch.nn.functional.pad(v, (0, width - v.shape[1]), value=pad_id if k == "input_ids" else 0)
             for k, v in t.items()}
        sel, targets = select_targets(t["input_ids"], t["loss_mask"])
    t = {k: None if v is None else v.to(device) for k, v in t.items()}
    sel, targets = sel.to(device), targets.to(device)
    topk = None
    if topk_rows is not None:  # cached rows are stored per example in the same (row-major) order
        topk = L.TeacherTopK(
            torch.cat([r[0] for r in topk_rows]).to(device), torch.cat([r[1] for r in topk_rows]).to(device)
        )
    return Batch(t, sel, targets, topk)


def model_inputs(tensors: dict) -> dict:
    """The decoder's keyword arguments of a batch: packed batches give positions instead of a mask."""
    if tensors.get("position_ids") is not None:
        return {"input_ids": tensors["input_ids"], "position_ids": tensors["position_ids"]}
    return {"input_ids": tensors["input_ids"], "attention_mask": tensors["attention_mask"]}


@torch.no_grad()
def supports_packing(model: nn.Module, vocab: int) -> bool:
    """Whether ``model`` keeps packed sequences apart: two sequences in one row vs each on its own.

    transformers builds the block-causal mask from position_ids for the models that use its mask
    utilities; any other model would silently attend across examples, so it is checked, not assumed.
    """
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randint(0, vocab, (1, n), generator=g) for n in (5, 7))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        alone = [model.base_model(input_ids=x.to(device), use_cache=False).last_hidden_state.float() for x in (a, b)]
        pos = torch.cat([torch.arange(5), torch.arange(7)])[None].to(device)
        packed = model.base_model(input_ids=torch.cat([a, b], 1).to(device), position_ids=pos,
                                  use_cache=False).last_hidden_state.float()
    except (TypeError, ValueError, RuntimeError):
        return False
    finally:
        model.train(was_training)
    return torch.allclose(packed, torch.cat(alone, 1), atol=1e-3, rtol=1e-3)


# --- training state and checkpoints ---------------------------------------------------------


@dataclass
class TrainResult:
    steps: int
    final: dict[str, float]
    history_path: Path
    resumed_from: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def latest_checkpoint(work_dir: Path) -> tuple[int, Path] | None:
    found = []
    for p in work_dir.glob("ckpt-*"):
        if (p / "trainer_state.json").exists() and p.name[5:].isdigit():
            found.append((int(p.name[5:]), p))
    return max(found) if found else None


def save_checkpoint(accelerator, work_dir: Path, step: int) -> None:
    """Write ``ckpt-<step>`` atomically: a kill at any point leaves the previous one intact."""
    tmp = work_dir / f"tmp-ckpt-{step}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=False)  # tied embeddings: plain torch.save
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step}))
        os.replace(tmp, work_dir / f"ckpt-{step}")
        for p in work_dir.glob("ckpt-*"):
            if p.name != f"ckpt-{step}":
                shutil.rmtree(p, ignore_errors=True)
    accelerator.wait_for_everyone()


def truncate_history(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint a resumed run restarts from."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    path.write_text("".join(ln + "\n" for ln in keep))


# --- the loop -------------------------------------------------------------------------------

TopKSource = Callable[[int], tuple[torch.Tensor, torch.Tensor]]  # example index -> (idx, logp) rows
Sampler = Callable[[nn.Module, list[Example], int], list[Example]]  # (student, examples, step) -> with responses


@dataclass
class DistillJob:
    """Everything one training run needs; the stage builds it, tests build it directly."""

    student: nn.Module
    teacher: nn.Module | None  # None: train from ``topk_train`` (offline teacher)
    train: list[Example]
    eval: list[Example]
    pad_id: int
    vocab: int
    cfg: DistillConfig
    work_dir: Path
    seed: int = 0
    topk_train: TopKSource | None = None
    topk_eval: TopKSource | None = None
    sampler: Sampler | None = None  # on-policy responses from the current student
    cross: Any = None  # slmkit.distill.cross_stage.CrossTokenizer: the teacher has its own vocabulary
    reporter: Any = None
    cpu: bool | None = None  # None: CPU when no CUDA device is present


@dataclass
class _Run:
    job: DistillJob
    acc: Any
    module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    spec: L.LossSpec
    dtype: torch.dtype
    layers: list[int]
    history: Path
    compile: bool = False
    compiled_layers: list = field(default_factory=list)  # decoder layers running compiled
    pack: bool = False  # several examples per row (checked per model, see supports_packing)


def _setup(job: DistillJob, accelerator) -> _Run:
    from accelerate import Accelerator

    # Accelerate only forms a multi-process CPU (gloo) group when told it runs on CPU
    cpu = job.cpu if job.cpu is not None else not torch.cuda.is_available()
    acc = accelerator or Accelerator(cpu=cpu)
    cfg, opt = job.cfg, job.cfg.optimizer
    # checked in fp32, before the teacher turns bf16 and before any layer is compiled
    pack = use_packing(cfg, job)
    torch.manual_seed(job.seed)  # projections are initialised identically on every rank and run
    hidden = cfg.loss.hidden
    layer_map = None
    if hidden is not None:
        layer_map = hidden.layer_map or L.default_layer_map(
            job.student.config.num_hidden_layers, job.teacher.config.num_hidden_layers
        )
    if cfg.quant_aware is not None:  # before the optimizer: it holds the latent weights
        from slmkit.distill import quant_aware

        quant_aware.apply(job.student, quant_aware.target_grid(cfg.quant_aware))
    t_width = job.teacher.config.hidden_size if job.teacher is not None else job.student.config.hidden_size
    module = DistillModule(job.student, job.vocab, layer_map, t_width, hidden.kind if hidden else "mse")
    if cfg.gradient_checkpointing:
        job.student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    job.student.config.use_cache = False
    job.student.train()
    # fused AdamW: one pass over each parameter instead of a dozen foreach passes (it was ~15%
    # of a CPU step for a 135M student)
    fused = acc.device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(
        module.parameters(), lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay, fused=fused
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, opt.warmup_steps, cfg.max_steps, opt.min_lr_ratio)
    )
    # the schedule is per optimizer step: Accelerate's prepared scheduler would step once per
    # process and run N times faster on N processes, so it is only registered for checkpoints
    module, optimizer = acc.prepare(module, optimizer)
    acc.register_for_checkpointing(sched)
    if job.teacher is not None:
        # a frozen teacher needs no fp32 master copy: bf16 weights halve its memory and skip
        # autocast's per-step weight casts
        dt = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
        job.teacher.to(device=acc.device, dtype=dt).eval().requires_grad_(False)
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
    layers = [] if layer_map is None else [layer_map[k] for k in sorted(layer_map)]
    job.work_dir.mkdir(parents=True, exist_ok=True)
    compile = use_compile(cfg.loss.compile, job.vocab, acc.device)
    compiled = []
    if use_layer_compile(cfg, job.vocab, acc.device, acc.num_processes):
        for model in (job.student, job.teacher):
            compiled += compile_decoder_layers(model) if model is not None else []
    return _Run(job, acc, module, optimizer, sched, cfg.loss.spec(), dtype, layers, job.work_dir / "metrics.jsonl",
                compile, compiled, pack)


def use_packing(cfg: DistillConfig, job: DistillJob) -> bool:
    """Resolve ``packing``: auto packs when the student and the teacher both keep packed sequences apart."""
    if cfg.packing is False or job.cross is not None:  # across tokenizers the teacher's rows follow its own batch
        return False
    models = [m for m in (job.student, job.teacher) if m is not None]
    ok = all(supports_packing(m, job.vocab) for m in models)
    if cfg.packing is True and not ok:
        raise SlmkitError("distill: packing: true, but the student or the teacher attends across packed sequences "
                          "(it does not read sequence boundaries from position_ids); use packing: auto or false")
    return ok


def _is_on_policy(cfg: DistillConfig, seed: int, step: int) -> bool:
    if cfg.on_policy.fraction <= 0:
        return False
    u = torch.rand(1, generator=torch.Generator().manual_seed(seed * 31 + step + 17)).item()
    return u < cfg.on_policy.fraction


def _micro_batches(run: _Run, step: int) -> tuple[list[Batch], bool]:
    job, cfg, acc = run.job, run.job.cfg, run.acc
    per_rank = cfg.batch_size * cfg.grad_accum
    idx = batch_indices(len(job.train), per_rank * acc.num_processes, step, job.seed)
    mine = idx[acc.process_index * per_rank : (acc.process_index + 1) * per_rank]
    on_policy = _is_on_policy(cfg, job.seed, step) and job.sampler is not None
    batches = []
    for j in range(cfg.grad_accum):
        ids = mine[j * cfg.batch_size : (j + 1) * cfg.batch_size]
        exs = [job.train[i] for i in ids]
        if on_policy:
            exs = job.sampler(acc.unwrap_model(run.module).student, exs, step)
        rows = [job.topk_train(i) for i in ids] if job.topk_train is not None else None
        batches.append(make_batch(exs, job.pad_id, acc.device, rows, pack=run.pack, width_cap=cfg.max_length))
        if job.cross is not None:
            batches[-1].cross = job.cross.batch(exs, batches[-1], acc.device)
    return batches, on_policy


def _forward(run: _Run, b: Batch, stats: dict):
    job, cfg = run.job, run.job.cfg
    teacher, t_hidden = b.topk, None
    if b.cross is not None:
        teacher = job.cross.teacher_rows(job.teacher, b.cross)
    elif job.teacher is not None:
        teacher, t_hidden = teacher_states(job.teacher, b.tensors, b.sel, run.layers, job.vocab)
    with _autocast(run.acc.device, cfg.precision):
        return run.module(
            b.tensors, b.sel, b.targets, teacher, t_hidden, run.spec, cfg.loss.chunk_size, run.dtype, stats,
            run.compile,
        )


def _reduce(acc, values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=acc.device)
    return acc.reduce(t, reduction="sum").tolist() if acc.num_processes > 1 else t.tolist()


def train_step(run: _Run, step: int) -> dict[str, float]:
    """One optimizer step over the global batch; returns its metrics (identical on every rank)."""
    cfg, acc = run.job.cfg, run.acc
    torch.manual_seed(run.job.seed * 7919 + step * acc.num_processes + acc.process_index)
    batches, on_policy = _micro_batches(run, step)
    (total,) = _reduce(acc, [float(sum(b.tokens for b in batches))])
    if total == 0:
        raise SlmkitError(f"step {step}: the global batch has no counted tokens (all responses empty)")
    world, sums, hid_w = acc.num_processes, [0.0, 0.0, 0.0], cfg.loss.hidden.weight if cfg.loss.hidden else 0.0
    for j, b in enumerate(batches):
        sync = acc.no_sync(run.module) if j < len(batches) - 1 else contextlib.nullcontext()
        with sync:
            stats: dict = {}
            loss_sum, hid = _forward(run, b, stats)
            loss = loss_sum * (world / total)  # DDP averages over ranks: undo it, divide by global tokens
            if hid is not None:
                loss = loss + hid_w * hid * (b.tokens * world / total)
                sums[2] += hid.item() * b.tokens
            acc.backward(loss)
        sums[0] += stats["kd_sum"].item()
        sums[1] += stats["ce_sum"].item()
    kd, ce, hs = (v / total for v in _reduce(acc, sums))
    loss_value = run.spec.kd_weight * kd + run.spec.ce_weight * ce + hid_w * hs
    if not math.isfinite(loss_value):
        run.optimizer.zero_grad(set_to_none=True)
        raise SlmkitError(
            f"distill: the loss became {loss_value} at step {step + 1}; stopped before updating the weights. "
            "The last good checkpoint stays in the work directory. Lower optimizer.lr or use precision: fp32."
        )
    grad_norm = float("nan")
    if cfg.optimizer.max_grad_norm is not None:
        grad_norm = float(acc.clip_grad_norm_(run.module.parameters(), cfg.optimizer.max_grad_norm))
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {"loss": loss_value, "kd": kd, "ce": ce, "hidden": hs, "lr": lr, "grad_norm": grad_norm,
            "tokens": total, "on_policy": on_policy}


@torch.no_grad()
def evaluate(run: _Run) -> dict[str, float]:
    """KL to the teacher, cross-entropy and top-1 agreement on held-out data (token means)."""
    job, acc = run.job, run.acc
    if not job.eval:
        return {}
    module = acc.unwrap_model(run.module)
    module.eval()
    sums = {"kl": 0.0, "ce": 0.0, "top1": 0.0, "tokens": 0.0}
    mine = list(range(acc.process_index, len(job.eval), acc.num_processes))
    for start in range(0, len(mine), job.cfg.batch_size):
        ids = mine[start : start + job.cfg.batch_size]
        rows = [job.topk_eval(i) for i in ids] if job.topk_eval is not None else None
        b = make_batch([job.eval[i] for i in ids], job.pad_id, acc.device, rows)
        teacher = b.topk
        if job.teacher is not None and job.cross is None:  # across tokenizers: the student's own CE only
            teacher, _ = teacher_states(job.teacher, b.tensors, b.sel, [], job.vocab)
        with _autocast(acc.device, job.cfg.precision):
            out = module.student.base_model(**model_inputs(b.tensors))
        h = out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])[b.sel]
        w = module.student.get_output_embeddings().weight[: job.vocab]
        part = L.eval_sums(h, w, teacher, b.targets, chunk_size=job.cfg.loss.chunk_size, compute_dtype=run.dtype)
        for k in sums:
            sums[k] += part[k]
    module.train()
    kl, ce, top1, n = _reduce(acc, [sums["kl"], sums["ce"], sums["top1"], sums["tokens"]])
    n = max(n, 1.0)
    metrics = {"eval_ce": ce / n, "eval_tokens": n}
    if (job.teacher is not None and job.cross is None) or job.topk_eval is not None:
        metrics.update(eval_kl=kl / n, eval_top1_agreement=top1 / n)
    return metrics


def _log(run: _Run, record: dict) -> None:
    if run.acc.is_main_process:
        with run.history.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _progress(reporter, total: int, done: int):
    if reporter is None:
        return contextlib.nullcontext(None)
    bar = reporter.progress(total, "distill")
    return bar


def _resume(run: _Run) -> int:
    found = latest_checkpoint(run.job.work_dir)
    if found is None:
        if run.acc.is_main_process and run.history.exists():
            run.history.unlink()  # a fresh start: lines from a run that never checkpointed are stale
        return 0
    step, path = found
    run.acc.load_state(str(path))
    if run.acc.is_main_process:
        truncate_history(run.history, step)
    run.acc.wait_for_everyone()
    return step


def train(job: DistillJob, accelerator=None) -> TrainResult:
    """Train ``job.student`` to imitate the teacher; resumes from the last checkpoint in work_dir."""
    run = _setup(job, accelerator)
    try:
        return _train(run)
    finally:
        uncompile(run.compiled_layers)  # later users of these models (generation, export) run eager
        if job.cfg.quant_aware is not None:  # the saved student holds the latent weights the export rounds
            from slmkit.distill import quant_aware

            quant_aware.remove(job.student)


def _train(run: _Run) -> TrainResult:
    job, cfg = run.job, run.job.cfg
    start = _resume(run)
    if start and job.reporter is not None:
        job.reporter.info(f"distill: resuming from the checkpoint at step {start}")
    final: dict[str, float] = {}
    t0, tokens = time.perf_counter(), 0.0
    # on CPU, reuse freed activation memory instead of faulting in fresh pages every step
    with training_allocator(enabled=run.acc.device.type == "cpu"), \
            _progress(job.reporter, cfg.max_steps - start, start) as bar:
        for step in range(start, cfg.max_steps):
            m = train_step(run, step)
            tokens += m["tokens"]
            rate = tokens / max(time.perf_counter() - t0, 1e-9)
            record = {"step": step + 1, **m, "tokens_per_s": rate}
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.max_steps:
                record.update(evaluate(run))
            _log(run, record)
            final = record
            if bar is not None:
                bar.advance(1, loss=f"{m['loss']:.4f}", tok_s=f"{rate:.0f}")
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.max_steps:
                save_checkpoint(run.acc, job.work_dir, step + 1)
    run.acc.wait_for_everyone()
    job.student = run.acc.unwrap_model(run.module).student
    return TrainResult(cfg.max_steps, final, run.history, resumed_from=start or None,
                       extra={"train_seconds": time.perf_counter() - t0, "tokens_trained": tokens,
                              "processes": run.acc.num_processes})
