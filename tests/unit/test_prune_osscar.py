"""OSSCAR selection and refit against direct computation on random activations."""

from __future__ import annotations

import itertools

import pytest
import torch

from slmkit.prune import osscar


def _problem(seed=0, tokens=200, d_ff=12, d_out=6):
    g = torch.Generator().manual_seed(seed)
    # correlated neurons make the reconstruction problem non-trivial
    h = torch.randn(tokens, d_ff, generator=g, dtype=torch.float64) @ torch.randn(
        d_ff, d_ff, generator=g, dtype=torch.float64
    )
    w = torch.randn(d_out, d_ff, generator=g, dtype=torch.float64)
    return h, w, h.T @ h


def test_reconstruction_error_matches_direct():
    h, w, gram = _problem()
    keep = torch.tensor([0, 3, 5, 7])
    v = torch.randn(6, 4, dtype=torch.float64)
    direct = (h @ w.T - h[:, keep] @ v.T).square().sum().item()
    assert osscar.reconstruction_error(gram, w, keep, v) == pytest.approx(direct, rel=1e-9)
    assert osscar.output_energy(gram, w) == pytest.approx((h @ w.T).square().sum().item(), rel=1e-9)


def test_refit_without_damping_is_least_squares():
    h, w, gram = _problem()
    keep = torch.tensor([1, 2, 4, 8, 9])
    v = osscar.refit_down(gram, w, keep, damping=0.0)
    ref = torch.linalg.lstsq(h[:, keep], h @ w.T).solution.T
    assert torch.allclose(v, ref, atol=1e-8)


def _ridge_gain(gd, b, keep):
    return torch.trace(b[keep].T @ torch.linalg.solve(gd[keep][:, keep], b[keep])).item()


def test_swap_formulas_are_exact():
    _, w, gram = _problem(seed=3)
    gd, b = osscar.damped_gram(gram, 0.01), gram @ w.T
    keep = torch.tensor([0, 2, 4, 6, 8])
    m = torch.linalg.inv(gd[keep][:, keep])
    costs = osscar._removal_costs(m, m @ b[keep])
    for pos in range(len(keep)):
        rest = torch.cat([keep[:pos], keep[pos + 1 :]])
        assert costs[pos].item() == pytest.approx(
            _ridge_gain(gd, b, keep) - _ridge_gain(gd, b, rest), rel=1e-8
        )
    out = osscar._complement(keep, 12)
    gains = osscar._addition_gains(gd, b, keep, out, m)
    for j, idx in enumerate(out.tolist()):
        bigger = torch.tensor(sorted(keep.tolist() + [idx]))
        assert gains[j].item() == pytest.approx(
            _ridge_gain(gd, b, bigger) - _ridge_gain(gd, b, keep), rel=1e-8
        )


def test_local_search_never_raises_the_objective():
    _, w, gram = _problem(seed=4)
    gd, b = osscar.damped_gram(gram, 0.01), gram @ w.T
    start = torch.tensor([0, 1, 2, 3, 4, 5])
    found, swaps = osscar.local_search(gram, w, start, damping=0.01, max_swaps=50, candidates=12)
    assert len(found) == 6 and len(set(found.tolist())) == 6
    assert swaps > 0
    assert _ridge_gain(gd, b, found) > _ridge_gain(gd, b, start)


def test_local_search_reaches_near_brute_force_optimum():
    _, w, gram = _problem(seed=5, d_ff=10)
    gd, b = osscar.damped_gram(gram, 0.01), gram @ w.T
    best = max(_ridge_gain(gd, b, torch.tensor(c)) for c in itertools.combinations(range(10), 4))
    found, _ = osscar.local_search(
        gram, w, torch.tensor([0, 1, 2, 3]), damping=0.01, max_swaps=50, candidates=4
    )
    # swap local search is a heuristic; on small problems it lands at or very near the optimum
    assert _ridge_gain(gd, b, found) >= 0.97 * best


def test_select_layer_beats_activation_selection_when_loud_neurons_are_useless():
    g = torch.Generator().manual_seed(6)
    h = torch.randn(200, 12, generator=g, dtype=torch.float64)  # independent neurons
    w = torch.randn(6, 12, generator=g, dtype=torch.float64)
    h[:, :6] *= 50.0  # loudest neurons ...
    w[:, :6] = 0.0  # ... contribute nothing to the output
    gram = h.T @ h
    choice = osscar.select_layer(gram, w, h.abs().sum(0), 6, damping=0.01, max_swaps=50, candidates=6)
    assert choice.chosen == "osscar"
    assert set(choice.keep.tolist()) == set(range(6, 12))
    assert choice.errors["osscar"] < 1e-3 < choice.errors["activation"]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("damping", [0.01, 5.0])
def test_select_layer_is_never_worse_than_either_baseline(seed, damping):
    h, w, gram = _problem(seed=seed)
    choice = osscar.select_layer(gram, w, h.abs().sum(0), 5, damping=damping, max_swaps=20, candidates=4)
    assert choice.errors[choice.chosen] == min(choice.errors.values())
    assert min(choice.errors.values()) >= -1e-9  # an error measured on a PSD Gram is never negative
    v = choice.down_weight
    assert osscar.reconstruction_error(gram, w, choice.keep, v) / osscar.output_energy(
        gram, w
    ) == pytest.approx(choice.errors[choice.chosen], rel=1e-9)


def test_heavy_damping_falls_back_to_a_baseline():
    # a huge ridge term shrinks the refit towards zero, so the plain activation choice wins
    h, w, gram = _problem(seed=1)
    choice = osscar.select_layer(gram, w, h.abs().sum(0), 6, damping=1e4, max_swaps=5, candidates=2)
    assert choice.chosen == "activation"
    assert choice.errors["activation"] < choice.errors["osscar"]
