"""Offline teacher: the teacher's top-k log-probabilities at every counted token, compact and streamed.

Built once per (teacher, tokenizer, data, k, temperature, format) as a content-addressed dataset
artifact that any number of students, epochs and recipes reuse; training then reads it instead of
running the teacher. Layout::

    cache.json                 format, top_k, vocab, row_bytes, examples, tokens, bytes_per_token, ...
    shard-00000.safetensors    rows [tokens, row_bytes] uint8, offsets [examples + 1] int64

Every counted position is one fixed-width row of bytes (rows of example ``i`` are its counted
positions in order, as ``trainer.select_targets`` yields them), so the reader slices a shard's
memory map for the examples of a batch without reading the rest of it. A row, by ``format``:

- ``int8`` (default; 159 bytes at k = 64 and a 49k vocabulary): the k token ids as an Elias-Fano
  coded ascending set (``low_bits`` low bits of each id, the high parts in unary: about
  2 + log2(V / k) bits per id, 11.5 at V = 49152, k = 64, where fixed-width ids need 16), then one
  byte per id: its log-probability below the row's top-1 in steps of a per-row scale, then the
  scale (one byte: 2^(e/16 - 12)), then the log of the tail mass outside the top-k (fp16).
- ``fp16``: the same ids, fp16 log-probabilities, the fp16 log tail (222 bytes at k = 64).
- ``fp32``: int32 ids and fp32 log-probabilities by rank, nothing else (512 bytes at k = 64), as
  they leave the teacher: the uncompressed reference.

Decoding the quantized formats renormalizes the k probabilities to one minus the stored tail, so
the (k + 1)-bucket losses (``losses.with_tail``) see the teacher's tail mass as it was, and ids are
returned sorted by descending log-probability (column 0 is the teacher's top-1).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from slmkit.data import Example
from slmkit.distill.losses import log1mexp
from slmkit.distill.trainer import compile_decoder_layers, make_batch, supports_packing, teacher_states

FORMATS = ("int8", "fp16", "fp32")
_SCALE_LO, _SCALE_STEPS = -12.0, 16.0  # per-row int8 scale = 2 ** (e / 16 - 12), e in 0..255


# --- the row layout (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class RowLayout:
    """Byte layout of one cached position for a vocabulary, k and format."""

    vocab: int
    k: int
    format: str

    @property
    def low_bits(self) -> int:
        return max(0, int(math.floor(math.log2(self.vocab / self.k)))) if self.vocab > self.k else 0

    @property
    def upper_bits(self) -> int:  # unary high parts: bit (id >> low_bits) + rank, for rank 0..k-1
        return ((self.vocab - 1) >> self.low_bits) + self.k

    @property
    def idx_bytes(self) -> int:
        if self.format == "fp32":
            return 4 * self.k
        return (self.upper_bits + self.k * self.low_bits + 7) // 8

    @property
    def value_bytes(self) -> int:
        return {"int8": self.k + 1 + 2, "fp16": 2 * self.k + 2, "fp32": 4 * self.k}[self.format]

    @property
    def row_bytes(self) -> int:
        return self.idx_bytes + self.value_bytes


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """[N, B] bool -> [N, ceil(B / 8)] uint8, bit j of byte i is bit 8 i + j."""
    n, b = bits.shape
    padded = torch.zeros(n, (b + 7) // 8 * 8, dtype=torch.uint8)
    padded[:, :b] = bits
    weights = (2 ** torch.arange(8, dtype=torch.int32)).to(torch.uint8)
    return (padded.view(n, -1, 8) * weights).sum(-1, dtype=torch.int32).to(torch.uint8)


def unpack_bits(data: torch.Tensor, b: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: [N, bytes] uint8 -> [N, b] bool."""
    shifts = torch.arange(8, dtype=torch.uint8)
    return ((data[:, :, None] >> shifts) & 1).bool().reshape(data.shape[0], -1)[:, :b]


def encode_ids(ids: torch.Tensor, layout: RowLayout) -> torch.Tensor:
    """[N, k] distinct ids, ascending -> [N, idx_bytes] uint8 (Elias-Fano: unary high parts, then low bits)."""
    ids = ids.long()
    n, k, lb = ids.shape[0], layout.k, layout.low_bits
    upper = torch.zeros(n, layout.upper_bits, dtype=torch.bool)
    upper.scatter_(1, (ids >> lb) + torch.arange(k), True)
    low = ((ids & ((1 << lb) - 1))[:, :, None] >> torch.arange(lb)) & 1 if lb else ids[:, :0, None]
    return pack_bits(torch.cat([upper, low.reshape(n, -1).bool()], 1))


def decode_ids(data: torch.Tensor, layout: RowLayout) -> torch.Tensor:
    """Inverse of :func:`encode_ids`: [N, idx_bytes] uint8 -> [N, k] int64 ascending."""
    n, k, lb = data.shape[0], layout.k, layout.low_bits
    bits = unpack_bits(data, layout.upper_bits + k * lb)
    pos = bits[:, : layout.upper_bits].nonzero()[:, 1].reshape(n, k)  # row-major: ascending per row
    high = pos - torch.arange(k)
    if not lb:
        return high
    low = bits[:, layout.upper_bits :].reshape(n, k, lb).long()
    return (high << lb) | (low << torch.arange(lb)).sum(-1)


def log_tail(logp: torch.Tensor) -> torch.Tensor:
    """log of the mass outside the k given log-probabilities (float64 sum), clamped to [-80, 0)."""
    return log1mexp(torch.logsumexp(logp.double(), -1)).clamp(min=-80.0).float()


def quantize_values(logp: torch.Tensor, layout: RowLayout) -> torch.Tensor:
    """[N, k] log-probs (in id order) -> [N, value_bytes] uint8 for ``int8`` / ``fp16``."""
    tail = log_tail(logp).half()[:, None].view(torch.uint8)
    if layout.format == "fp16":
        return torch.cat([logp.half().view(torch.uint8), tail], 1)
    below = logp.max(-1, keepdim=True).values - logp  # >= 0; the top-1 is code 0
    step = (below.max(-1, keepdim=True).values / 255).clamp(min=1e-12)
    e = torch.ceil(_SCALE_STEPS * (torch.log2(step) - _SCALE_LO)).clamp(0, 255)
    scale = torch.exp2(e / _SCALE_STEPS + _SCALE_LO)  # rounded up: the codes still fit in a byte
    codes = torch.round(below / scale).clamp(0, 255).to(torch.uint8)
    return torch.cat([codes, e.to(torch.uint8), tail], 1)


def dequantize_values(data: torch.Tensor, layout: RowLayout) -> torch.Tensor:
    """Inverse of :func:`quantize_values`, renormalized so the k probabilities sum to 1 - tail."""
    k = layout.k
    tail = data[:, -2:].contiguous().view(torch.float16).float()
    if layout.format == "fp16":
        logp = data[:, : 2 * k].contiguous().view(torch.float16).float()
    else:
        scale = torch.exp2(data[:, k : k + 1].float() / _SCALE_STEPS + _SCALE_LO)
        logp = -data[:, :k].float() * scale
    return logp + (log1mexp(tail) - torch.logsumexp(logp, -1, keepdim=True))


def encode_rows(idx: torch.Tensor, logp: torch.Tensor, layout: RowLayout) -> torch.Tensor:
    """Top-k (ids [N, k], log-probs [N, k], any order) -> [N, row_bytes] uint8."""
    if layout.format == "fp32":
        return torch.cat([idx.to(torch.int32).view(torch.uint8), logp.float().view(torch.uint8)], 1)
    order = idx.argsort(-1)
    ids, values = idx.gather(-1, order), logp.float().gather(-1, order)
    return torch.cat([encode_ids(ids, layout), quantize_values(values, layout)], 1)


def decode_rows(rows: torch.Tensor, layout: RowLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, row_bytes] uint8 -> (ids [N, k] int64, log-probs [N, k] float32), by descending log-prob."""
    cut = layout.idx_bytes
    if layout.format == "fp32":
        return rows[:, :cut].contiguous().view(torch.int32).long(), rows[:, cut:].contiguous().view(torch.float32)
    ids, logp = decode_ids(rows[:, :cut], layout), dequantize_values(rows[:, cut:], layout)
    logp, order = logp.sort(dim=-1, descending=True, stable=True)
    return ids.gather(-1, order), logp


# --- building and reading ------------------------------------------------------------------------


def data_fingerprint(examples: list[Example]) -> str:
    """Hash of what the cache's rows depend on in the data: each example's tokens and loss mask."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.input_ids, e.loss_mask]).encode())
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the vocabulary (token -> id) and the special tokens."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps([vocab, tokenizer.all_special_tokens]).encode()).hexdigest()


@torch.no_grad()
def topk_rows(teacher, examples: list[Example], *, pad_id: int, vocab: int, k: int, temperature: float,
              device, dtype: torch.dtype, chunk: int = 256, pack: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per example: (idx [n_i, k], logp [n_i, k]) of the teacher at ``temperature``, by rank.

    ``pack``: several examples per row (the teacher must keep them apart, ``supports_packing``);
    the selected positions stay in example order either way, so the rows split the same.
    """
    b = make_batch(examples, pad_id, device, pack=pack)
    t, _ = teacher_states(teacher, b.tensors, b.sel, [], vocab)
    idx, logp = [], []
    w = t.weight.to(dtype)
    for start in range(0, t.hidden.shape[0], chunk):
        z = t.hidden[start : start + chunk].to(dtype) @ w.T
        if t.bias is not None:
            z = z + t.bias.to(dtype)
        z = z.float() / temperature
        # top-k of the logits, normalized by one logsumexp: no full-vocabulary log-softmax written
        top, ix = z.topk(k, -1)
        idx.append(ix.to(torch.int32).cpu())
        logp.append((top - torch.logsumexp(z, -1, keepdim=True)).cpu())
    idx_all, logp_all = torch.cat(idx), torch.cat(logp)
    counts = [int(sum(e.loss_mask[1:])) for e in examples]
    return list(zip(idx_all.split(counts), logp_all.split(counts)))


def build_cache(out_dir: Path, teacher, examples: list[Example], *, pad_id: int, vocab: int, k: int,
                temperature: float, batch_size: int, shard_examples: int, device, dtype,
                format: str = "int8", compile_layers: bool = False, pack: bool = True) -> dict:
    """Write the shards and cache.json, one shard in memory at a time; returns the manifest metrics.

    The teacher runs as the live loop runs it: ``dtype`` weights (converted in place), examples
    packed into rows when ``pack`` and it keeps them apart, and with ``compile_layers`` its decoder
    layers compiled, so building costs about one teacher pass of a training epoch.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown teacher cache format {format!r}; expected one of {FORMATS}")
    pack = pack and supports_packing(teacher.to(device), vocab)  # checked before bf16, as the trainer does
    teacher.to(device=device, dtype=dtype).eval()
    if compile_layers:
        compile_decoder_layers(teacher)
    k = min(k, vocab)
    layout = RowLayout(vocab, k, format)
    t0, tokens, size = time.perf_counter(), 0, 0
    for s, start in enumerate(range(0, len(examples), shard_examples)):
        part = examples[start : start + shard_examples]
        rows = []
        for b in range(0, len(part), batch_size):
            rows += topk_rows(teacher, part[b : b + batch_size], pad_id=pad_id, vocab=vocab, k=k,
                              temperature=temperature, device=device, dtype=dtype, pack=pack)
        offsets = torch.tensor([0] + [r[0].shape[0] for r in rows]).cumsum(0)
        data = encode_rows(torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows]), layout)
        tokens += int(offsets[-1])
        path = out_dir / f"shard-{s:05d}.safetensors"
        save_file({"rows": data.contiguous(), "offsets": offsets}, str(path))
        size += path.stat().st_size
    seconds = time.perf_counter() - t0
    meta = {"format": format, "top_k": k, "vocab": vocab, "row_bytes": layout.row_bytes,
            "temperature": temperature, "examples": len(examples), "tokens": tokens,
            "shard_examples": shard_examples, "teacher_seconds": seconds, "packed": pack,
            "bytes_per_token": round(size / max(1, tokens), 2)}
    (out_dir / "cache.json").write_text(json.dumps(meta, indent=2))
    return meta


class TopKCache:
    """Streams a cache directory: ``cache(i)`` gives example ``i``'s (idx, logp) rows, by rank.

    Each shard is opened once as a memory map; a call reads only example ``i``'s rows from it.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.meta = json.loads((self.path / "cache.json").read_text())
        self.layout = RowLayout(self.meta["vocab"], self.meta["top_k"], self.meta["format"])
        self._shards: dict[int, tuple] = {}

    def _shard(self, s: int):
        if s not in self._shards:
            f = safe_open(str(self.path / f"shard-{s:05d}.safetensors"), framework="pt")
            self._shards[s] = (f.get_slice("rows"), f.get_tensor("offsets").tolist(), f)
        return self._shards[s]

    def __call__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, j = divmod(i, self.meta["shard_examples"])
        rows, offsets, _ = self._shard(s)
        a, b = offsets[j], offsets[j + 1]
        if a == b:
            return torch.zeros(0, self.layout.k, dtype=torch.long), torch.zeros(0, self.layout.k)
        return decode_rows(rows[a:b], self.layout)

    def __len__(self) -> int:
        return self.meta["examples"]

    @property
    def seconds_per_token(self) -> float:
        return self.meta["teacher_seconds"] / max(1, self.meta["tokens"])

    @property
    def bytes_per_token(self) -> float:
        return self.meta["bytes_per_token"]
