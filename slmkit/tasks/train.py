"""Training scorers: distillation on cached teacher scores, and fine-tuning on the rows' labels.

The teacher cache is a dataset artifact (``teacher_scores/v<N>/``, like the generation top-k
cache): ``logits.npy`` [N, K_teacher] in row order plus ``rows.json`` fingerprints. A student
step takes whole groups (so listwise KD sees complete candidate lists), computes its label
logits with autograd on, and minimises ``task.kd``.
Fine-tuning (``finetune_scorer``) runs the same loop on the labels alone. Checkpoints go to the
stage's work dir so a killed run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from slmkit.errors import InputError
from slmkit.tasks.config import ScoreDistillConfig, TaskConfig
from slmkit.tasks.data import ScoringRow
from slmkit.tasks.losses import label_loss, score_kd_loss
from slmkit.tasks.metrics import group_indices
from slmkit.tasks.prefix import PACKED_KERNELS, packed_logits, score_rows_shared
from slmkit.tasks.scorers import CausalLMScorer, score_rows

CHECKPOINT = "score_kd.pt"  # the distill stage's; the fine-tune stage writes finetune.pt


def rows_fingerprint(rows: Sequence[ScoringRow]) -> str:
    """Hash of the scored content (context, item, group): part of the teacher-cache key."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r.context, r.item, r.group]).encode())
    return h.hexdigest()[:16]


def teacher_logits(scorer, rows: Sequence[ScoringRow], batch_size: int = 32) -> torch.Tensor:
    """[N, K] teacher label logits; causal-LM teachers share each context's prefill."""
    if isinstance(scorer, CausalLMScorer):
        return score_rows_shared(scorer, rows, batch_size=batch_size)
    return score_rows(scorer, rows, batch_size=batch_size)


def write_teacher_cache(out_dir: Path, logits: torch.Tensor, rows: Sequence[ScoringRow]) -> dict:
    """Files of the teacher-score artifact; returns its manifest metrics."""
    out_dir = Path(out_dir)
    np.save(out_dir / "logits.npy", logits.float().numpy())
    (out_dir / "rows.json").write_text(json.dumps({"count": len(rows), "fingerprint": rows_fingerprint(rows)}))
    return {"rows": len(rows), "labels": int(logits.shape[1])}


def read_teacher_cache(cache_dir: Path, rows: Sequence[ScoringRow]) -> torch.Tensor:
    """Cached teacher logits, refusing a cache built from other rows."""
    meta = json.loads((Path(cache_dir) / "rows.json").read_text())
    if meta["fingerprint"] != rows_fingerprint(rows):
        raise InputError(f"{cache_dir}: teacher scores were computed on different rows; delete it to rebuild")
    return torch.from_numpy(np.load(Path(cache_dir) / "logits.npy"))


def group_batches(rows: Sequence[ScoringRow], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of row-index batches: shuffled whole groups, filled to at least ``batch_size`` rows."""
    groups = list(group_indices([r.group for r in rows]).values())
    rng.shuffle(groups)
    batches, current = [], []
    for g in groups:
        current += g
        if len(current) >= batch_size:
            batches.append(current)
            current = []
    return batches + ([current] if current else [])


def train_logits(scorer, batch: Sequence[ScoringRow]) -> torch.Tensor:
    """Label logits with autograd on: a causal LM runs each context once with its candidates packed
    behind it (same scores as row by row, a fraction of the tokens); a classifier scores the pairs."""
    if isinstance(scorer, CausalLMScorer) and scorer.model.config._attn_implementation in PACKED_KERNELS:
        return packed_logits(scorer, batch)
    return scorer.logits(batch)


def _batch_tensors(scorer, rows, idx: list[int], bf16: bool):
    """(student label logits, label indices with -1 for unlabelled, small-integer group ids) of a batch."""
    batch = [rows[i] for i in idx]
    device = next(scorer.model.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        student = train_logits(scorer, batch)
    labels = torch.tensor([-1 if r.label is None else r.label for r in batch], device=student.device)
    # group ids as small integers: the losses only compare them for equality
    gid = {g: n for n, g in enumerate(dict.fromkeys(r.group for r in batch))}
    return student, labels, torch.tensor([gid[r.group] for r in batch], device=student.device)


def batch_loss(scorer, rows, teacher: torch.Tensor, idx: list[int], task: TaskConfig, bf16: bool) -> torch.Tensor:
    """The KD (+ hard-label) loss of one batch of row indices."""
    student, labels, groups = _batch_tensors(scorer, rows, idx, bf16)
    return score_kd_loss(student, teacher[idx].to(student.device), kind=task.kd.kind,
                         temperature=task.kd.temperature, hard_label_weight=task.kd.hard_label_weight,
                         labels=labels, groups=groups)


def make_optimizer(model, cfg):
    """AdamW over the trainable parameters (a LoRA model leaves its base frozen), linear warm-up and decay."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)

    def schedule(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        return max(0.0, (cfg.max_steps - step) / max(1, cfg.max_steps - cfg.warmup_steps))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(work_dir: Path, model, opt, sched, step: int, losses: list[float], name: str = CHECKPOINT) -> None:
    """Atomic: a kill -9 mid-write leaves the previous checkpoint intact. Only trainable parameters
    are kept (the rest is the input model, reloaded on resume)."""
    tmp = Path(work_dir) / (name + ".tmp")
    torch.save({"model": _trainable_state(model), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "step": step, "losses": losses}, tmp)
    os.replace(tmp, Path(work_dir) / name)


def load_checkpoint(work_dir: Path | None, model, opt, sched, name: str = CHECKPOINT) -> tuple[int, list[float]]:
    """Restore the last checkpoint if there is one; returns (next step, loss history)."""
    path = Path(work_dir) / name if work_dir else None
    if path is None or not path.is_file():
        return 0, []
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing = set(_trainable_state(model)) - set(state["model"])
    if missing:
        raise InputError(f"{path}: the checkpoint lacks {len(missing)} trainable tensor(s) of this model "
                         f"(e.g. {sorted(missing)[0]}); delete it to start over")
    model.load_state_dict(state["model"], strict=False)
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    return state["step"], list(state["losses"])


def train_scorer(scorer, rows: Sequence[ScoringRow], loss_of: Callable[[list[int]], torch.Tensor], cfg, *,
                 seed: int = 0, work_dir: Path | None = None, reporter=None, name: str = "score_kd") -> dict:
    """The loop of every scorer stage: ``loss_of(row indices)`` minimised with AdamW for ``cfg.max_steps``.

    Batches are whole groups in a seeded order; each step re-seeds torch from (seed, step), so a
    run resumed from a checkpoint in ``work_dir`` replays the same batches and dropout masks and
    ends with the weights of an uninterrupted run.
    """
    model = scorer.model.train()
    opt, sched = make_optimizer(model, cfg)
    step, losses = load_checkpoint(work_dir, model, opt, sched, f"{name}.pt")
    rng = random.Random(seed)
    batches: list[list[int]] = []
    for _ in range(step):  # after a resume, replay the data order up to where the run stopped
        batches = batches or group_batches(rows, cfg.batch_size, rng)
        batches.pop()
    start = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    while step < cfg.max_steps:
        if not batches:
            batches = group_batches(rows, cfg.batch_size, rng)
        torch.manual_seed(seed * 7919 + step)
        loss = loss_of(batches.pop())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        step += 1
        losses.append(loss.item())
        if reporter is not None and (step % 10 == 0 or step == cfg.max_steps):
            reporter.info(f"{name} step {step}/{cfg.max_steps} loss {np.mean(losses[-10:]):.4f}")
        if work_dir is not None and step % cfg.checkpoint_every == 0:
            save_checkpoint(work_dir, model, opt, sched, step, losses, f"{name}.pt")
    model.eval()
    return {"steps": step, "first_loss": losses[0] if losses else None,
            "final_loss": float(np.mean(losses[-10:])) if losses else None,
            "train_seconds": round(time.perf_counter() - start, 2)}


def distill_scorer(
    scorer, rows: Sequence[ScoringRow], teacher: torch.Tensor, task: TaskConfig, cfg: ScoreDistillConfig, *,
    seed: int = 0, work_dir: Path | None = None, reporter=None,
) -> dict:
    """Train ``scorer.model`` in place on teacher label logits; returns metrics for the manifest."""
    if len(rows) != len(teacher):
        raise InputError(f"{len(rows)} rows but {len(teacher)} teacher scores")
    return train_scorer(scorer, rows, lambda idx: batch_loss(scorer, rows, teacher, idx, task, cfg.bf16), cfg,
                        seed=seed, work_dir=work_dir, reporter=reporter, name="score_kd")


def finetune_scorer(scorer, rows: Sequence[ScoringRow], cfg, *, seed: int = 0, work_dir: Path | None = None,
                    reporter=None) -> dict:
    """Train ``scorer.model`` in place on the rows' own labels (``cfg.label_loss``: pointwise or listwise)."""
    if not any(r.label is not None for r in rows):
        raise InputError("finetune: the training rows carry no labels; a scorer is fine-tuned on its task's labels")

    def loss_of(idx: list[int]) -> torch.Tensor:
        student, labels, groups = _batch_tensors(scorer, rows, idx, cfg.bf16)
        return label_loss(student, labels, groups, cfg.label_loss)

    return train_scorer(scorer, rows, loss_of, cfg, seed=seed, work_dir=work_dir, reporter=reporter,
                        name="finetune")
