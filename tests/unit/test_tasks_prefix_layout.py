"""The packed-candidates mask and positions against a plain per-token reference."""

import torch

from slmkit.tasks.prefix import attention_bias, packed_layout


def reference(prefix_len, lengths):
    segs = [(i, j) for i, n in enumerate(lengths) for j in range(n)]  # (candidate, offset) per token
    mask = [[True] * prefix_len + [a == c and d <= b for c, d in segs] for a, b in segs]
    positions = [prefix_len + b for _, b in segs]
    last, end = [], 0
    for n in lengths:
        end += n
        last.append(end - 1)
    return torch.tensor(mask), torch.tensor(positions), torch.tensor(last)


def test_packed_layout_matches_reference():
    for prefix_len, lengths in [(5, [3, 1, 4]), (1, [1]), (7, [2, 2, 2, 2]), (3, [6])]:
        got = packed_layout(prefix_len, lengths)
        for g, r in zip(got, reference(prefix_len, lengths)):
            assert torch.equal(g, r)


def test_single_candidate_is_plain_causal():
    mask, positions, last = packed_layout(4, [5])
    causal = torch.tril(torch.ones(5, 5, dtype=torch.bool))
    assert torch.equal(mask[:, 4:], causal) and mask[:, :4].all()
    assert positions.tolist() == [4, 5, 6, 7, 8] and last.tolist() == [4]


def test_attention_bias_formats():
    mask = torch.tensor([[True, False], [True, True]])
    assert attention_bias(mask, "sdpa", torch.float32).dtype == torch.bool
    eager = attention_bias(mask, "eager", torch.float32)
    assert eager.shape == (1, 1, 2, 2) and eager[0, 0, 0, 1] == torch.finfo(torch.float32).min
    assert eager[0, 0, 1].tolist() == [0.0, 0.0]
