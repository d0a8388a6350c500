"""Prune's perplexity: padding-independent, masked, and the benchmark's definition."""

import math

import pytest
import torch
import torch.nn.functional as F

from slmkit.data import Example
from slmkit.prune._eval import perplexity


def test_perplexity_matches_unpadded_per_example_reference(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    g = torch.Generator().manual_seed(0)
    exs = [
        Example(torch.randint(0, 200, (n,), generator=g).tolist(), mask)
        for n, mask in [(9, [0, 0, 0, 1, 1, 1, 1, 1, 1]), (5, [0, 1, 1, 1, 1]), (7, [0] * 7)]
    ]
    nll, count = 0.0, 0
    with torch.no_grad():
        for e in exs:  # one sequence at a time, no padding: the plain definition
            logits = model(input_ids=torch.tensor([e.input_ids])).logits[0].double()
            ce = F.cross_entropy(logits[:-1], torch.tensor(e.input_ids[1:]), reduction="none")
            keep = torch.tensor(e.loss_mask[1:]).bool()
            nll, count = nll + float(ce[keep].sum()), count + int(keep.sum())
    want = math.exp(nll / count)
    assert count == 10  # targets: the masked tokens after position 0
    assert perplexity(model, exs, pad_id=0, batch_size=3) == pytest.approx(want, rel=1e-5)
    assert perplexity(model, exs, pad_id=0, batch_size=1) == pytest.approx(want, rel=1e-5)
    assert perplexity(model, exs[2:], pad_id=0, batch_size=2) is None  # nothing to score

