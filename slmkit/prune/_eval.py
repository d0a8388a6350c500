"""Token-level perplexity on eval data, before and after pruning (prune's own, kept private)."""

from __future__ import annotations

import math

import torch

from slmkit.data import Example, collate


def perplexity(model, examples: list[Example], pad_id: int, batch_size: int) -> float | None:
    """exp(mean NLL) over tokens with loss_mask == 1; None when there is nothing to score."""
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start : start + batch_size], pad_id)
            logits = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                use_cache=False,
            ).logits.float()
            # token t is predicted from the logits at t - 1
            targets = batch["input_ids"][:, 1:].to(device)
            mask = batch["loss_mask"][:, 1:].to(device).bool()
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), targets, reduction="none"
            )
            nll += float(losses[mask].sum())
            count += int(mask.sum())
    return math.exp(nll / count) if count else None
