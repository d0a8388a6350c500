"""Token-level perplexity on eval data, before and after pruning.

The same definition as the benchmark's ``perplexity`` metric (``sequence_nll``: logits at t
predict token t + 1, only loss-mask tokens count), so the figure a prune stage records and the
one a benchmark reports for the same model and data agree.
"""

from __future__ import annotations

import math

import torch

from slmkit.benchmark.quality import sequence_nll
from slmkit.data import Example, collate


def perplexity(model, examples: list[Example], pad_id: int, batch_size: int) -> float | None:
    """exp(mean NLL) over tokens with loss_mask == 1; None when there is nothing to score."""
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            exs = examples[start : start + batch_size]
            batch = collate(exs, pad_id)
            logits = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                use_cache=False,
            ).logits.float().cpu()
            for i, ex in enumerate(exs):  # right-padded: row i's own tokens are its first len(ex)
                n = len(ex.input_ids)
                s, c = sequence_nll(logits[i, :n], batch["input_ids"][i, :n], batch["loss_mask"][i, :n])
                nll, count = nll + s, count + c
    return math.exp(nll / count) if count else None
