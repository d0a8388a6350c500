"""OSSCAR against activation selection on a real model: per-layer reconstruction error and time.

    HF_HUB_OFFLINE=1 python scripts/bench_osscar.py --keep-ratio 0.5 --samples 64

Calibrates on the built-in prompt set (real chat text), then runs OSSCAR's selection for every
MLP at the same neuron count as the activation (Minitron) baseline and prints, per layer, the
relative reconstruction error of: activation selection, activation selection + refit, OSSCAR,
plus the swaps made and the seconds spent. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from slmkit.data import collate
from slmkit.prune.calibration import Needs, calibrate
from slmkit.prune.osscar import select_layer


def calibration_batches(tokenizer, samples: int, length: int, batch_size: int):
    from slmkit.data import load_examples
    from slmkit.recipe import DataSpec

    spec = DataSpec(path="builtin:prompts", max_samples=samples, max_length=length)
    examples = load_examples(spec, tokenizer, base_dir=Path.cwd())
    pad = tokenizer.pad_token_id
    return [collate(examples[i : i + batch_size], pad) for i in range(0, len(examples), batch_size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:smollm2-135m-instruct")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--keep-ratio", type=float, default=0.5)
    parser.add_argument("--max-swaps", type=int, default=64)
    parser.add_argument("--swap-candidates", type=int, default=8)
    parser.add_argument("--damping", type=float, default=0.01)
    parser.add_argument("--layers", type=int, nargs="*", default=None, help="layer indices (default: all)")
    args = parser.parse_args()

    from slmkit.models import load_ref

    model, tokenizer = load_ref(args.model, "float32")
    start = time.perf_counter()
    batches = calibration_batches(tokenizer, args.samples, args.length, 8)
    stats = calibrate(model, batches, Needs(mlp_abs=True, mlp_gram=True), dtype=torch.bfloat16)
    calib_s = time.perf_counter() - start
    keep = int(args.keep_ratio * model.config.intermediate_size)
    rows = []
    for i in args.layers if args.layers is not None else range(model.config.num_hidden_layers):
        t = time.perf_counter()
        weight = model.model.layers[i].mlp.down_proj.weight.data
        choice = select_layer(
            stats.mlp_gram[i],
            weight,
            stats.mlp_abs[i],
            keep,
            damping=args.damping,
            max_swaps=args.max_swaps,
            candidates=args.swap_candidates,
        )
        errors = {k: round(v, 5) for k, v in choice.errors.items()}
        rows.append(
            {
                "layer": i,
                **errors,
                "chosen": choice.chosen,
                "swaps": choice.swaps,
                "seconds": round(time.perf_counter() - t, 2),
            }
        )
    print(
        json.dumps(
            {
                "model": args.model,
                "calibration_tokens": stats.tokens,
                "calibration_seconds": round(calib_s, 1),
                "keep_neurons": keep,
                "of": model.config.intermediate_size,
                "layers": rows,
                "fallback_layers": [r["layer"] for r in rows if r["chosen"] != "osscar"],
                "mean": {
                    k: round(sum(r[k] for r in rows) / len(rows), 5)
                    for k in ("activation", "activation_refit", "osscar")
                },
            }
        )
    )


if __name__ == "__main__":
    main()
