"""Benchmark slmkit's generator against ``model.generate``, in one process and one run.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_generate.py [--prompts 64] [--new-tokens 96]
        [--batch-size 16] [--threads 1] [--compile]

Teacher: the embedded SmolLM2-135M-Instruct (its GGUF dequantized to fp32, as slmkit loads it);
prompts: the first ``--prompts`` of ``builtin:prompts`` rendered with the chat template, as a
recipe's ``data.train`` would be; greedy answers of up to ``--new-tokens`` tokens, EOS stopping.
The reference is today's path: eager fp32 ``model.generate`` on length-sorted batches of
``--batch-size``. slmkit's generator runs in the configuration the quickstart uses (bf16
weights, ``--slmkit-batch-size`` rows) and in fp32, whose tokens must be the reference's. ``--compile`` adds a run with the compiled decode step (its compilation
timed apart). Progress goes to stderr; the last line of stdout is one JSON object with
``speedup``, ``speedup_fp32``, ``same_tokens``, ``same_tokens_bf16`` and the rates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from slmkit.data import load_examples
from slmkit.distill.generate import Sampling, generate_responses, hf_generate_ids, split_response
from slmkit.models import load_ref
from slmkit.recipe import DataSpec


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg} (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)


def same_tokens(a: list[list[int]], b: list[list[int]]) -> float:
    """Identical tokens at identical positions over all positions either side generated."""
    same = sum(sum(x == y for x, y in zip(r, s)) for r, s in zip(a, b))
    return same / max(1, sum(max(len(r), len(s)) for r, s in zip(a, b)))


def timed(name: str, fn) -> tuple[list[list[int]], dict]:
    log(f"{name}: generating")
    started = time.perf_counter()
    rows = fn()
    seconds = time.perf_counter() - started
    tokens = sum(map(len, rows))
    log(f"{name}: {tokens} tokens in {seconds:.1f} s ({tokens / seconds:.1f} tok/s)")
    return rows, {"tokens": tokens, "seconds": round(seconds, 2), "tok_s": round(tokens / seconds, 2)}


def main(args) -> dict:
    if args.threads:
        # on a CPU shared with other jobs, OpenMP threads spin-waiting on each other dominate
        # every op; one thread per process gives stable timings there
        torch.set_num_threads(args.threads)
    model, tok = load_ref("builtin:smollm2-135m-instruct", "float32")
    spec = DataSpec(path="builtin:prompts", max_samples=args.prompts, max_length=256)
    examples = load_examples(spec, tok, base_dir=Path.cwd())
    prompts = [e.prompt_ids for e in examples]
    pad, eos, n = tok.pad_token_id, tok.eos_token_id, args.new_tokens

    def slmkit(dtype: str, compile: bool = False):
        def run():
            out = generate_responses(model, examples, pad_id=pad, eos_id=eos, max_new_tokens=n, do_sample=False,
                                     batch_size=args.slmkit_batch_size, dtype=dtype, compile=compile)
            return [e.input_ids[len(e.prompt_ids):] for e in out]
        return run

    def reference():
        rows = hf_generate_ids(model, prompts, pad_id=pad, eos_id=eos, max_new_tokens=n, sampling=Sampling(),
                               batch_size=args.batch_size)
        return [split_response(r, eos, pad) for r in rows]

    ref, ref_t = timed("model.generate fp32", reference)
    bf16, bf16_t = timed("slmkit bf16", slmkit("bfloat16"))
    fp32, fp32_t = timed("slmkit fp32", slmkit("float32"))
    result = {
        "speedup": round(bf16_t["tok_s"] / ref_t["tok_s"], 3),
        "speedup_fp32": round(fp32_t["tok_s"] / ref_t["tok_s"], 3),
        "same_tokens": round(same_tokens(fp32, ref), 4),
        "same_tokens_bf16": round(same_tokens(bf16, ref), 4),
        "slmkit_tok_s": bf16_t["tok_s"], "slmkit_fp32_tok_s": fp32_t["tok_s"], "generate_tok_s": ref_t["tok_s"],
        "generate": ref_t, "slmkit": bf16_t, "slmkit_fp32": fp32_t,
    }
    if args.compile:
        result.update(compiled(slmkit, ref, ref_t))
    result.update({"prompts": len(prompts), "new_tokens": n, "batch_size": args.batch_size,
                   "slmkit_batch_size": args.slmkit_batch_size,
                   "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
                   "torch": torch.__version__})
    return result


def compiled(slmkit, ref, ref_t) -> dict:
    """The compiled decode step: a first call that pays the compilation, then a timed one."""
    _, first = timed("slmkit bf16 compiled (first call, compiles)", slmkit("bfloat16", compile=True))
    rows, t = timed("slmkit bf16 compiled", slmkit("bfloat16", compile=True))
    return {"speedup_compiled": round(t["tok_s"] / ref_t["tok_s"], 3), "slmkit_compiled": t,
            "compile_seconds": round(first["seconds"] - t["seconds"], 1),
            "same_tokens_compiled": round(same_tokens(rows, ref), 4)}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=16, help="model.generate's batch (today's code path)")
    p.add_argument("--slmkit-batch-size", type=int, default=64,
                   help="rows slmkit's generator decodes together (the quickstart's sequence_kd.batch_size)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--compile", action="store_true", help="also time the compiled decode step")
    print(json.dumps(main(p.parse_args())))
