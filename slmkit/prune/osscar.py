"""OSSCAR-style MLP neuron selection: minimise each layer's output reconstruction error.

Meng et al. 2024, "OSSCAR: One-Shot Structured Pruning in Vision and Language Models with
Combinatorial Optimization" (arXiv 2403.12983), as used by the LinkedIn paper this toolkit
follows. For one MLP, H [tokens, d_ff] is the gated intermediate and Y = H W^T its output
(W = down_proj.weight, [d_out, d_ff]). Keeping neurons S and refitting W on them costs

    err(S) = ||Y||^2 - tr(B_S^T (G_SS + D_SS)^-1 B_S),   G = H^T H,  B = G W^T,  D = damping * diag(G),

so everything needed is the Gram matrix G, accumulated by streaming calibration. The search
starts from the activation (Minitron) selection and swaps one kept and one removed neuron while
the error falls; removal cost and addition gain are exact rank-one formulas, so each accepted
swap lowers the (ridge) objective. The final choice is checked with the exact, undamped error
against the baselines and falls back to the better baseline if the search ended worse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def damped_gram(gram: torch.Tensor, damping: float) -> torch.Tensor:
    """G + damping * diag(G): keeps the refit well posed.

    The ridge is relative to each neuron's own energy, not the mean (as GPTQ does), so the
    selection is scale invariant: MLP neurons differ in scale by orders of magnitude, and a
    mean-based ridge would all but erase the quiet ones from the search.
    """
    diag = gram.diagonal()
    return gram + torch.diag(damping * diag.clamp_min(1e-12 * float(diag.max().clamp_min(1e-30))))


def refit_down(gram: torch.Tensor, weight: torch.Tensor, keep: torch.Tensor, damping: float) -> torch.Tensor:
    """Least-squares down projection on the kept neurons: argmin_V ||H W^T - H_S V^T||^2 (+ridge)."""
    g = damped_gram(gram.double(), damping)
    b = gram.double() @ weight.double().T  # [d_ff, d_out]; the target uses the undamped G
    v_t = torch.linalg.solve(g[keep][:, keep], b[keep])
    return v_t.T.contiguous()


def reconstruction_error(gram: torch.Tensor, weight: torch.Tensor, keep: torch.Tensor, new_weight) -> float:
    """||H W^T - H_S V^T||^2 computed from the Gram matrix (exact, no damping)."""
    g, w, v = gram.double(), weight.double(), new_weight.double()
    full = (w @ g * w).sum()
    cross = (w @ g[:, keep] * v).sum()
    kept = (v @ g[keep][:, keep] * v).sum()
    return float(full - 2 * cross + kept)


def output_energy(gram: torch.Tensor, weight: torch.Tensor) -> float:
    """||Y||^2 = tr(W G W^T): the scale that turns an error into a relative error."""
    w = weight.double()
    return float((w @ gram.double() * w).sum())


def _removal_costs(m: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    # dropping i from a least-squares support raises the error by ||beta_i||^2 / M_ii (OBS)
    return beta.square().sum(1) / m.diagonal()


def _downdate(m: torch.Tensor, i: int) -> torch.Tensor:
    keep = torch.arange(m.shape[0], device=m.device) != i
    col = m[keep, i]
    return m[keep][:, keep] - torch.outer(col, col) / m[i, i]


def _addition_gains(
    gd: torch.Tensor, b: torch.Tensor, kept: torch.Tensor, out: torch.Tensor, m: torch.Tensor
):
    # adding j lowers the error by ||r_j||^2 / s_j: residual correlation over the Schur complement
    g_ok = gd[out][:, kept]
    beta = m @ b[kept]
    r = b[out] - g_ok @ beta
    s = gd[out, out] - ((g_ok @ m) * g_ok).sum(1)
    return r.square().sum(1) / s.clamp_min(1e-30)


def local_search(
    gram: torch.Tensor,
    weight: torch.Tensor,
    keep: torch.Tensor,
    *,
    damping: float,
    max_swaps: int,
    candidates: int,
) -> tuple[torch.Tensor, int]:
    """Swap kept/removed neurons while the ridge objective falls; returns (keep, swaps made)."""
    g = gram.double()
    gd = damped_gram(g, damping)
    b = g @ weight.double().T
    tol = 1e-10 * output_energy(g, weight)
    kept = keep.clone()
    swaps = 0
    while swaps < max_swaps:
        out = _complement(kept, g.shape[0])
        m = torch.linalg.inv(gd[kept][:, kept])
        costs = _removal_costs(m, m @ b[kept])
        accepted = False
        for i in torch.argsort(costs)[:candidates].tolist():
            rest = torch.cat([kept[:i], kept[i + 1 :]])
            gains = _addition_gains(gd, b, rest, out, _downdate(m, i))
            j = int(torch.argmax(gains))
            if gains[j] - costs[i] > tol:
                kept = torch.cat([rest, out[j : j + 1]]).sort().values
                swaps, accepted = swaps + 1, True
                break
        if not accepted:
            break
    return kept, swaps


def _complement(keep: torch.Tensor, n: int) -> torch.Tensor:
    mask = torch.ones(n, dtype=torch.bool, device=keep.device)
    mask[keep] = False
    return mask.nonzero().squeeze(1)


@dataclass
class LayerChoice:
    keep: torch.Tensor  # sorted neuron indices to keep
    down_weight: torch.Tensor  # the new down_proj weight [d_out, k] (float64)
    errors: dict[str, float]  # relative error of each candidate: activation, activation_refit, osscar
    chosen: str  # which candidate was kept; anything but "osscar" is a fallback
    swaps: int


def select_layer(
    gram: torch.Tensor,
    weight: torch.Tensor,
    act_scores: torch.Tensor,
    k: int,
    *,
    damping: float,
    max_swaps: int,
    candidates: int,
) -> LayerChoice:
    """OSSCAR for one MLP, guaranteed no worse than activation selection (with or without refit)."""
    base = torch.topk(act_scores, k).indices.sort().values
    energy = max(output_energy(gram, weight), 1e-30)
    search, swaps = local_search(
        gram, weight, base, damping=damping, max_swaps=max_swaps, candidates=candidates
    )
    options = {
        "osscar": (search, refit_down(gram, weight, search, damping)),
        "activation_refit": (base, refit_down(gram, weight, base, damping)),
        "activation": (base, weight.double()[:, base]),
    }
    errors = {name: reconstruction_error(gram, weight, s, v) / energy for name, (s, v) in options.items()}
    # the search optimises the damped objective; the exact error decides, preferring osscar on ties
    chosen = min(options, key=lambda name: (errors[name], name != "osscar"))
    keep, down = options[chosen]
    return LayerChoice(keep=keep, down_weight=down, errors=errors, chosen=chosen, swaps=swaps)


def needs(cfg, model_config: dict, keep: int):
    from slmkit.prune.calibration import Needs

    return Needs(mlp_abs=True, mlp_gram=True)


def apply(model, stats, cfg, keep: int, *, work_dir=None, reporter=None, **_) -> dict:
    """Select and refit every MLP, checkpointing each layer's choice so a killed run resumes."""
    from slmkit.prune.surgery import decoder_layers, prune_mlp_neurons

    choices = []
    for i, layer in enumerate(decoder_layers(model)):
        path = work_dir / f"osscar_layer_{i}.pt" if work_dir is not None else None
        if path is not None and path.exists():
            choice = LayerChoice(**torch.load(path))
        else:
            choice = select_layer(
                stats.mlp_gram[i],
                layer.mlp.down_proj.weight.data.cpu(),
                stats.mlp_abs[i],
                keep,
                damping=cfg.damping,
                max_swaps=cfg.max_swaps,
                candidates=cfg.swap_candidates,
            )
            if path is not None:
                torch.save(choice.__dict__, path)
        if choice.chosen != "osscar" and reporter is not None:
            reporter.warn(
                f"osscar: layer {i} kept the {choice.chosen} selection (local search ended no better)"
            )
        choices.append(choice)
    prune_mlp_neurons(model, [c.keep for c in choices], [c.down_weight for c in choices])
    return {
        "neurons_kept": keep,
        "reconstruction_error": [{k: round(v, 8) for k, v in c.errors.items()} for c in choices],
        "chosen": [c.chosen for c in choices],
        "fallback_layers": [i for i, c in enumerate(choices) if c.chosen != "osscar"],
        "swaps": [c.swaps for c in choices],
    }
