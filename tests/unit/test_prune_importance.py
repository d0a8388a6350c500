"""Importance math against plain loop references on random tensors."""

from __future__ import annotations

import math

import pytest
import torch

from slmkit.prune import importance as imp
from slmkit.prune.sparsity import sparsify_weight


@pytest.fixture
def acts():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 16, generator=g)
    y = torch.randn(3, 5, 16, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    return x, y, mask


def _tokens(x, mask):
    return [x[b, t] for b in range(x.shape[0]) for t in range(x.shape[1]) if mask[b, t]]


def test_block_influence_matches_loop(acts):
    x, y, mask = acts
    ref = sum(
        1 - torch.nn.functional.cosine_similarity(a, b, dim=0).item()
        for a, b in zip(_tokens(x, mask), _tokens(y, mask))
    )
    assert imp.block_influence_sum(x, y, mask).item() == pytest.approx(ref, rel=1e-6)


def test_block_influence_is_zero_for_identity_and_scale(acts):
    x, _, mask = acts
    assert imp.block_influence_sum(x, 3.0 * x, mask).item() == pytest.approx(0.0, abs=1e-9)


def test_angular_distance_bounds():
    a = torch.randn(4, 8)
    assert torch.allclose(imp.angular_distance(a, a), torch.zeros(4, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(imp.angular_distance(a, -a), torch.ones(4, dtype=torch.float64), atol=1e-6)
    b = torch.randn(4, 8)
    ref = [
        math.acos(max(-1.0, min(1.0, torch.nn.functional.cosine_similarity(a[i], b[i], dim=0).item())))
        / math.pi
        for i in range(4)
    ]
    assert imp.angular_distance(a, b).tolist() == pytest.approx(ref, rel=1e-5)


def test_block_angular_sums_matches_loop(acts):
    _, _, mask = acts
    hidden = [torch.randn(3, 5, 16) for _ in range(6)]
    n = 2
    got = imp.block_angular_sums(hidden, n, mask)
    assert got.shape == (4,)  # 6 boundary states = 5 layers: blocks of 2 start at 0..3
    for l in range(4):
        ref = sum(
            imp.angular_distance(a, b).item()
            for a, b in zip(_tokens(hidden[l], mask), _tokens(hidden[l + n], mask))
        )
        assert got[l].item() == pytest.approx(ref, rel=1e-6)


def test_channel_sums_match_loop(acts):
    x, _, mask = acts
    toks = torch.stack(_tokens(x, mask))
    assert torch.allclose(imp.abs_mean_sum(x, mask), toks.abs().sum(0).double(), atol=1e-5)
    assert torch.allclose(imp.sq_norm_sum(x, mask), toks.square().sum(0).double(), atol=1e-5)
    assert torch.allclose(imp.gram_sum(x, mask), (toks.T @ toks).double(), atol=1e-4)


def test_head_norm_sum_and_groups(acts):
    x, _, mask = acts  # 16 = 4 heads x 4 dims
    toks = torch.stack(_tokens(x, mask))
    ref = torch.stack([toks[:, h * 4 : (h + 1) * 4].norm(dim=1).sum() for h in range(4)]).double()
    heads = imp.head_norm_sum(x, mask, 4)
    assert torch.allclose(heads, ref, atol=1e-5)
    assert torch.allclose(imp.group_scores(heads, 2), torch.stack([ref[0] + ref[1], ref[2] + ref[3]]))


def test_top_k_indices_sorted_and_highest():
    scores = torch.tensor([0.5, 3.0, -1.0, 2.0, 2.5])
    assert imp.top_k_indices(scores, 3).tolist() == [1, 3, 4]


def test_unstructured_mask_zeroes_lowest_per_row():
    scores = torch.rand(6, 20, generator=torch.Generator().manual_seed(1))
    mask = imp.unstructured_mask(scores, 0.25)
    assert (mask.sum(1) == 15).all()
    for r in range(6):
        assert scores[r][~mask[r]].max() <= scores[r][mask[r]].min()


def test_n_m_mask_keeps_top_n_of_each_block():
    scores = torch.rand(5, 16, generator=torch.Generator().manual_seed(2))
    mask = imp.n_m_mask(scores, 2, 4)
    blocks, kept = scores.view(5, 4, 4), mask.view(5, 4, 4)
    assert (kept.sum(-1) == 2).all()
    ref = torch.zeros_like(kept)
    ref.scatter_(-1, blocks.topk(2, dim=-1).indices, True)
    assert torch.equal(kept, ref)


def test_wanda_uses_input_norm_not_just_magnitude():
    # a small weight on a loud input outranks a large weight on a quiet one
    w = torch.tensor([[1.0, 0.1]])
    norm = torch.tensor([0.01, 100.0])
    out = sparsify_weight(w, norm, sparsity=0.5, pattern=None)
    assert out[0, 0] == 0 and out[0, 1] == w[0, 1]
    assert imp.wanda_scores(w, norm)[0].tolist() == pytest.approx([0.01, 10.0])
