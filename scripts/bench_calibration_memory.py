"""Peak memory of prune calibration: streamed statistics versus holding every activation.

    HF_HUB_OFFLINE=1 python scripts/bench_calibration_memory.py --samples 512 --length 512 --method depth

Streams ``--samples`` sequences of ``--length`` random token ids (memory does not depend on the
text) through the model with the same hooks the prune stage uses, sampling the process RSS every
20 ms. Prints one JSON object: the RSS growth during calibration, at each quarter of the samples
(flat = bounded), the size of the accumulated statistics, and what keeping the activations the
statistics are computed from would take instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import psutil
import torch

from slmkit.data import collate
from slmkit.prune.calibration import Needs, calibrate

MB = 2**20


def needs_for(method: str, num_layers: int) -> Needs:
    return {
        "depth": Needs(angular_block=num_layers // 4),
        "width_mlp": Needs(mlp_abs=True, head_norms=True),
        "osscar": Needs(mlp_abs=True, mlp_gram=True),
        "sparsity": Needs(
            linear_norms=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
        ),
    }[method]


class RssSampler(threading.Thread):
    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.proc, self.interval, self.peak, self.running = psutil.Process(), interval, 0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)


def random_batches(samples: int, length: int, batch_size: int, vocab: int, seed: int):
    from slmkit.data import Example

    g = torch.Generator().manual_seed(seed)
    for start in range(0, samples, batch_size):
        n = min(batch_size, samples - start)
        ids = torch.randint(100, vocab, (n, length), generator=g)
        yield collate([Example(input_ids=row.tolist(), loss_mask=[1] * length) for row in ids], pad_id=0)


def stats_bytes(stats) -> int:
    total = 0
    for value in stats.to_dict().values():
        tensors = value.values() if isinstance(value, dict) else [value]
        total += sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:smollm2-135m-instruct")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--method", default="depth", choices=["depth", "width_mlp", "osscar", "sparsity"])
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from slmkit.models import load_ref

    model, _ = load_ref(args.model, "float32")
    cfg = model.config
    proc = psutil.Process()
    rss_before = proc.memory_info().rss
    quarters, done = [], [0]

    def on_batch(n: int) -> None:
        done[0] += n
        if done[0] * 4 // args.samples > len(quarters) - 1 or done[0] == args.samples:
            quarters.append(round((proc.memory_info().rss - rss_before) / MB, 1))
            print(f"{done[0]}/{args.samples} samples, {time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)

    sampler = RssSampler()
    sampler.start()
    start = time.perf_counter()
    batches = random_batches(args.samples, args.length, args.batch_size, cfg.vocab_size, seed=0)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    stats = calibrate(
        model, batches, needs_for(args.method, cfg.num_hidden_layers), dtype=dtype, on_batch=on_batch
    )
    seconds = time.perf_counter() - start
    sampler.running = False
    sampler.join()

    tokens = args.samples * args.length
    residual = tokens * (cfg.num_hidden_layers + 1) * cfg.hidden_size * 4
    intermediate = tokens * cfg.num_hidden_layers * cfg.intermediate_size * 4
    print(
        json.dumps(
            {
                "model": args.model,
                "method": args.method,
                "dtype": args.dtype,
                "samples": args.samples,
                "length": args.length,
                "batch_size": args.batch_size,
                "tokens": stats.tokens,
                "seconds": round(seconds, 1),
                "tokens_per_s": round(tokens / seconds),
                "rss_before_mb": round(rss_before / MB),
                "rss_growth_peak_mb": round((sampler.peak - rss_before) / MB, 1),
                "rss_growth_at_quarters_mb": quarters[-4:],
                "stats_mb": round(stats_bytes(stats) / MB, 1),
                "all_residual_states_fp32_mb": round(residual / MB),
                "all_mlp_intermediates_fp32_mb": round(intermediate / MB),
            }
        )
    )


if __name__ == "__main__":
    main()
