"""Offline teacher: the teacher's top-k log-probabilities at every counted token, in shards.

Built once per (teacher, data, k, temperature) as a dataset artifact; training then reads it
instead of running the teacher. Layout::

    cache.json                   top_k, temperature, examples, tokens, teacher_seconds
    shard-00000.safetensors      idx [rows, k] int32, logp [rows, k] float32, offsets [n + 1] int64

Rows of example ``i`` are its counted positions in order, as ``trainer.select_targets`` yields them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from slmkit.data import Example
from slmkit.distill.trainer import make_batch, teacher_states


@torch.no_grad()
def topk_rows(teacher, examples: list[Example], *, pad_id: int, vocab: int, k: int, temperature: float,
              device, dtype: torch.dtype, chunk: int = 256) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per example: (idx [n_i, k], logp [n_i, k]) of the teacher at ``temperature``."""
    b = make_batch(examples, pad_id, device)
    t, _ = teacher_states(teacher, b.tensors, b.sel, [], vocab)
    idx, logp = [], []
    for start in range(0, t.hidden.shape[0], chunk):
        z = t.hidden[start : start + chunk].to(dtype) @ t.weight.to(dtype).T
        lp, ix = F.log_softmax(z.float() / temperature, -1).topk(k, -1)
        idx.append(ix.to(torch.int32).cpu())
        logp.append(lp.cpu())
    idx_all, logp_all = torch.cat(idx), torch.cat(logp)
    counts = [int(sum(e.loss_mask[1:])) for e in examples]
    return list(zip(idx_all.split(counts), logp_all.split(counts)))


def build_cache(out_dir: Path, teacher, examples: list[Example], *, pad_id: int, vocab: int, k: int,
                temperature: float, batch_size: int, shard_examples: int, device, dtype) -> dict:
    """Write the shards and cache.json; returns metrics for the dataset manifest."""
    t0, tokens = time.perf_counter(), 0
    for s, start in enumerate(range(0, len(examples), shard_examples)):
        part = examples[start : start + shard_examples]
        rows = []
        for b in range(0, len(part), batch_size):
            rows += topk_rows(teacher, part[b : b + batch_size], pad_id=pad_id, vocab=vocab, k=k,
                              temperature=temperature, device=device, dtype=dtype)
        offsets = torch.tensor([0] + [r[0].shape[0] for r in rows]).cumsum(0)
        tokens += int(offsets[-1])
        save_file({"idx": torch.cat([r[0] for r in rows]).contiguous(),
                   "logp": torch.cat([r[1] for r in rows]).contiguous(), "offsets": offsets},
                  str(out_dir / f"shard-{s:05d}.safetensors"))
    seconds = time.perf_counter() - t0
    meta = {"top_k": k, "temperature": temperature, "examples": len(examples), "tokens": tokens,
            "shard_examples": shard_examples, "teacher_seconds": seconds}
    (out_dir / "cache.json").write_text(json.dumps(meta, indent=2))
    return meta


class TopKCache:
    """Reads a cache directory; ``cache(i)`` gives example ``i``'s (idx, logp) rows."""

    def __init__(self, path: Path):
        self.meta = json.loads((path / "cache.json").read_text())
        self.path = path
        self._shards: dict[int, dict] = {}

    def __call__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, j = divmod(i, self.meta["shard_examples"])
        if s not in self._shards:
            self._shards[s] = load_file(str(self.path / f"shard-{s:05d}.safetensors"))
        sh = self._shards[s]
        a, b = int(sh["offsets"][j]), int(sh["offsets"][j + 1])
        return sh["idx"][a:b], sh["logp"][a:b]

    @property
    def seconds_per_token(self) -> float:
        return self.meta["teacher_seconds"] / max(1, self.meta["tokens"])
