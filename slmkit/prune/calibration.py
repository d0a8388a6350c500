"""Streaming calibration: forward hooks fold activations into running sums, batch by batch.

No activation outlives the forward pass that made it, so memory is the model, one batch and the
statistics (O(layers x width), or O(layers x d_ff^2) when OSSCAR asks for Gram matrices),
independent of how many calibration samples stream through.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from slmkit.prune import importance
from slmkit.prune.surgery import decoder_layers, projection


@dataclass
class Needs:
    """Which statistics a method asks for (block influence is always collected for the plot)."""

    angular_block: int | None = None  # n: distances between h_l and h_{l+n}
    mlp_abs: bool = False
    mlp_gram: bool = False
    head_norms: bool = False
    linear_norms: tuple[str, ...] = ()  # projection names whose input norms Wanda needs


@dataclass
class Stats:
    """Accumulated sums; ``means()`` divides by the token count."""

    tokens: int = 0
    block_influence: torch.Tensor | None = None  # [L]
    angular_block: torch.Tensor | None = None  # [L - n + 1]
    mlp_abs: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [d_ff]
    mlp_gram: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [d_ff, d_ff]
    head_norms: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [heads]
    linear_sq: dict[str, torch.Tensor] = field(default_factory=dict)  # "l.name" -> [d_in]

    def add(self, table: dict, key, value: torch.Tensor) -> None:
        table[key] = value if key not in table else table[key] + value

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class _Collector:
    """Holds the running sums and the current batch's token mask; the hooks write into it."""

    def __init__(self, num_layers: int, needs: Needs, num_heads: int):
        self.needs, self.num_heads = needs, num_heads
        self.stats = Stats(block_influence=torch.zeros(num_layers, dtype=torch.float64))
        self.mask: torch.Tensor | None = None
        self.boundary: list[torch.Tensor] = []  # this batch's residual states, for angular_block only

    def layer_hook(self, idx: int, last: bool):
        def hook(module, args, kwargs, output):
            x_in = args[0] if args else kwargs["hidden_states"]
            x_out = output[0] if isinstance(output, tuple) else output
            m = self.mask.to(x_in.device)
            self.stats.block_influence[idx] += importance.block_influence_sum(x_in, x_out, m).cpu()
            if self.needs.angular_block is not None:
                self.boundary.append(x_in.detach())
                if last:
                    self.boundary.append(x_out.detach())

        return hook

    def mlp_hook(self, idx: int):
        def hook(module, args):
            x, m = args[0], self.mask.to(args[0].device)
            if self.needs.mlp_abs:
                self.stats.add(self.stats.mlp_abs, idx, importance.abs_mean_sum(x, m).cpu())
            if self.needs.mlp_gram:
                self.stats.add(self.stats.mlp_gram, idx, importance.gram_sum(x, m).cpu())

        return hook

    def attn_hook(self, idx: int):
        def hook(module, args):
            x, m = args[0], self.mask.to(args[0].device)
            self.stats.add(self.stats.head_norms, idx, importance.head_norm_sum(x, m, self.num_heads).cpu())

        return hook

    def linear_hook(self, key: str):
        def hook(module, args):
            x, m = args[0], self.mask.to(args[0].device)
            self.stats.add(self.stats.linear_sq, key, importance.sq_norm_sum(x, m).cpu())

        return hook

    def end_batch(self) -> None:
        n = self.needs.angular_block
        if n is not None and self.boundary:
            sums = importance.block_angular_sums(
                self.boundary, n, self.mask.to(self.boundary[0].device)
            ).cpu()
            prev = self.stats.angular_block
            self.stats.angular_block = sums if prev is None else prev + sums
        self.boundary = []
        self.stats.tokens += int(self.mask.sum())


@contextmanager
def _hooks(model, collector: _Collector):
    handles = []
    layers = decoder_layers(model)
    needs = collector.needs
    for i, layer in enumerate(layers):
        handles.append(
            layer.register_forward_hook(collector.layer_hook(i, i == len(layers) - 1), with_kwargs=True)
        )
        if needs.mlp_abs or needs.mlp_gram:
            handles.append(layer.mlp.down_proj.register_forward_pre_hook(collector.mlp_hook(i)))
        if needs.head_norms:
            handles.append(layer.self_attn.o_proj.register_forward_pre_hook(collector.attn_hook(i)))
        # one hook per distinct Linear: a fused projection's parts (Phi-3's q/k/v) share their input
        linears = {key: linear for key, linear, _ in (projection(layer, n, model.config) for n in needs.linear_norms)}
        for key, linear in linears.items():
            handles.append(linear.register_forward_pre_hook(collector.linear_hook(f"{i}.{key}")))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def calibrate(model, batches: Iterable[dict], needs: Needs, *, dtype=torch.float32, on_batch=None) -> Stats:
    """Stream ``batches`` (from slmkit.data.collate) through ``model`` and return summed statistics.

    Only the decoder stack runs (no lm_head): the statistics never look at logits.
    """
    config = model.config
    collector = _Collector(config.num_hidden_layers, needs, config.num_attention_heads)
    device = next(model.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    with _hooks(model, collector), torch.inference_mode(), autocast:
        for batch in batches:
            collector.mask = batch["attention_mask"].bool()
            model.base_model(  # the decoder stack without the head (model.model, transformer, ...)
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                use_cache=False,
            )
            collector.end_batch()
            if on_batch is not None:
                on_batch(len(batch["input_ids"]))
    return collector.stats
