"""Prefix-shared scoring: one context's KV cache, computed once, reused by all its candidates.

Scoring is prefill only. With C context tokens and N candidates of S tokens each, independent
scoring runs N * (C + S) tokens through the model; sharing the prefix runs C + N * S. Two ways to run the N candidates against the cached context:

- ``packed`` (default): the candidates are concatenated into ONE sequence after the context,
  with a block mask so each candidate token sees the context and the earlier tokens of its
  own candidate only, and position ids restarting at C for every candidate. The context's
  keys/values are never copied, and there is no padding.
- ``batched``: the candidates form a right-padded batch and the context cache is repeated
  for each row. Works with any attention kernel (packed needs one that takes a custom 4D mask:
  sdpa or eager), but copies the cache N times.

Either way every real token sees exactly the keys and positions it would see in the full
sequence, so scores equal independent scoring up to float rounding (tested within 1e-4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from slmkit.tasks.data import ScoringRow
from slmkit.tasks.metrics import group_indices
from slmkit.tasks.scorers import CausalLMScorer, last_positions, right_pad

PACKED_KERNELS = ("sdpa", "eager")


def prefill_prefix(scorer: CausalLMScorer, prefix_ids: Sequence[int]) -> DynamicCache:
    """The KV cache of one context prefix (batch of 1)."""
    device = scorer.model.get_output_embeddings().weight.device
    ids = torch.tensor([list(prefix_ids)], dtype=torch.long, device=device)
    return scorer.model.get_decoder()(input_ids=ids, use_cache=True).cache


def fresh_cache(cache: DynamicCache, batch: int, config) -> DynamicCache:
    """A new cache holding the prefix ``batch`` times; the original stays untouched for the next chunk.

    A forward pass appends to the cache it is given, so every chunk starts from a copy.
    ``expand`` is a view: the only copy is the one the new cache makes when it is filled.
    """
    data = [(layer.keys.expand(batch, -1, -1, -1), layer.values.expand(batch, -1, -1, -1)) for layer in cache.layers]
    return DynamicCache(ddp_cache_data=data, config=config)


def packed_layout(prefix_len: int, lengths: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Block-causal mask [T, C + T], positions [T] and last-token indices [N] of packed candidates.

    Pure index math: query t of candidate i may see key k iff k is in the context, or k is in
    candidate i at or before t.
    """
    lengths_t = torch.tensor(list(lengths))
    segment = torch.repeat_interleave(torch.arange(len(lengths_t)), lengths_t)  # [T] candidate of each token
    starts = torch.cumsum(lengths_t, 0) - lengths_t
    offset = torch.arange(int(lengths_t.sum())) - starts[segment]  # position within its candidate
    own = (segment[:, None] == segment[None, :]) & (offset[None, :] <= offset[:, None])
    mask = torch.cat([torch.ones((len(segment), prefix_len), dtype=torch.bool), own], dim=1)
    return mask, prefix_len + offset, starts + lengths_t - 1


def attention_bias(mask: torch.Tensor, kernel: str, dtype: torch.dtype) -> torch.Tensor:
    """The 4D mask a kernel takes as-is: bool (True = attend) for sdpa, additive float for eager."""
    mask = mask[None, None]
    if kernel == "eager":
        return torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
    return mask


def score_packed(
    scorer: CausalLMScorer, cache: DynamicCache, prefix_len: int, suffixes: Sequence[Sequence[int]]
) -> torch.Tensor:
    """[N, K] label logits of candidates packed into one sequence after the cached prefix."""
    model = scorer.model
    device, dtype = model.get_output_embeddings().weight.device, model.get_output_embeddings().weight.dtype
    mask, positions, last = packed_layout(prefix_len, [len(s) for s in suffixes])
    ids = torch.tensor([[t for s in suffixes for t in s]], dtype=torch.long, device=device)
    hidden = model.get_decoder()(
        input_ids=ids,
        attention_mask=attention_bias(mask, model.config._attn_implementation, dtype).to(device),
        position_ids=positions[None].to(device),
        cache=fresh_cache(cache, 1, model.config),
        use_cache=True,
    ).last_hidden_state
    return scorer.head(hidden[0, last.to(device)])


def score_batched(
    scorer: CausalLMScorer, cache: DynamicCache, prefix_len: int, suffixes: Sequence[Sequence[int]]
) -> torch.Tensor:
    """[N, K] label logits of candidates as a right-padded batch over a repeated prefix cache."""
    device = scorer.model.get_output_embeddings().weight.device
    ids, suffix_mask = right_pad(suffixes, scorer.pad_id)
    n, width = ids.shape
    mask = torch.cat([torch.ones((n, prefix_len), dtype=torch.long), suffix_mask], dim=1)
    positions = torch.arange(prefix_len, prefix_len + width).expand(n, -1)
    hidden = scorer.model.get_decoder()(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        cache=fresh_cache(cache, n, scorer.model.config),
        use_cache=True,
    ).last_hidden_state
    return scorer.head(last_positions(hidden, suffix_mask.to(device)))


def group_layout(prefix_len: int, lengths: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask [L, L], positions [L] and last-token indices [N] of one context and its candidates as ONE
    sequence (L = prefix_len + sum(lengths)): the context is causal, candidates as in :func:`packed_layout`."""
    own, positions, last = packed_layout(prefix_len, lengths)
    causal = torch.ones((prefix_len, prefix_len), dtype=torch.bool).tril()
    top = torch.cat([causal, torch.zeros((prefix_len, own.shape[0]), dtype=torch.bool)], dim=1)
    return torch.cat([top, own]), torch.cat([torch.arange(prefix_len), positions]), prefix_len + last


def packed_logits(scorer: CausalLMScorer, rows: Sequence[ScoringRow]) -> torch.Tensor:
    """[N, K] label logits of ``rows`` with autograd on: each context once, its candidates after it.

    The training counterpart of :func:`score_rows_shared`: one sequence per context (its rows'
    candidates packed behind it under a block mask), the sequences right-padded into one batch.
    A group of 8 candidates runs 1/2-1/3 of the tokens of independent rows padded to the longest.
    Pad tokens attend to themselves only, so no attention row is empty.
    """
    model = scorer.model
    weight, kernel = model.get_output_embeddings().weight, model.config._attn_implementation
    by_context = list(group_indices([r.context for r in rows]).items())
    seqs, layouts = [], []
    for context, idx in by_context:
        prefix = scorer.encode_prefix(context)
        suffixes = [scorer.encode_suffix(rows[i].item) for i in idx]
        seqs.append(prefix + [t for s in suffixes for t in s])
        layouts.append(group_layout(len(prefix), [len(s) for s in suffixes]))
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), scorer.pad_id, dtype=torch.long)
    mask = torch.eye(width, dtype=torch.bool).repeat(len(seqs), 1, 1)
    positions = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, (seq, (m, pos, _)) in enumerate(zip(seqs, layouts)):
        n = len(seq)
        ids[b, :n], mask[b, :n, :n], positions[b, :n] = torch.tensor(seq), m, pos
    hidden = model.get_decoder()(
        input_ids=ids.to(weight.device),
        attention_mask=attention_bias(mask, kernel, weight.dtype)[0, 0][:, None].to(weight.device),
        position_ids=positions.to(weight.device), use_cache=False,
    ).last_hidden_state
    picked = torch.cat([hidden[b, last.to(weight.device)] for b, (_, _, last) in enumerate(layouts)])
    order = torch.tensor([i for _, idx in by_context for i in idx])
    return scorer.head(picked)[torch.argsort(order).to(weight.device)]


STRATEGIES = {"packed": score_packed, "batched": score_batched}


def pick_strategy(scorer: CausalLMScorer, strategy: str = "auto") -> str:
    """``packed`` where the attention kernel takes a custom 4D mask, else ``batched``."""
    if strategy != "auto":
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown prefix strategy {strategy!r}; expected auto, packed or batched")
        return strategy
    return "packed" if scorer.model.config._attn_implementation in PACKED_KERNELS else "batched"


def score_context(
    scorer: CausalLMScorer, prefix_ids: Sequence[int], suffixes: Sequence[Sequence[int]],
    batch_size: int = 32, strategy: str = "auto",
) -> torch.Tensor:
    """[N, K] label logits of all candidates of one context, sharing its prefill.

    ``batch_size`` candidates go through the model at once (one packed sequence, or one batch).
    """
    run = STRATEGIES[pick_strategy(scorer, strategy)]
    cache = prefill_prefix(scorer, prefix_ids)
    out = [run(scorer, cache, len(prefix_ids), suffixes[i : i + batch_size]) for i in range(0, len(suffixes), batch_size)]
    return torch.cat(out)


def score_rows_shared(
    scorer: CausalLMScorer, rows: Sequence[ScoringRow], batch_size: int = 32, strategy: str = "auto"
) -> torch.Tensor:
    """[N, K] label logits of ``rows`` in their order; rows of one context share its prefill.

    Rows are grouped by context text (not group id: only an identical prefix can be shared).
    """
    out = torch.empty((len(rows), len(scorer.token_ids)))
    with torch.inference_mode():
        for context, idx in group_indices([r.context for r in rows]).items():
            suffixes = [scorer.encode_suffix(rows[i].item) for i in idx]
            out[idx] = score_context(scorer, scorer.encode_prefix(context), suffixes, batch_size, strategy).cpu()
    return out
