"""The compact teacher-cache rows: exact ids, bounded log-prob error, the tail mass kept, sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from slmkit.distill import losses as L
from slmkit.distill.teacher_cache import (
    RowLayout,
    decode_ids,
    decode_rows,
    encode_ids,
    encode_rows,
    pack_bits,
    unpack_bits,
)


def _topk(n: int, vocab: int, k: int, sharpness: float = 3.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=g) * sharpness
    return F.log_softmax(logits, -1).topk(k, -1)


def test_bits_round_trip():
    bits = torch.rand(5, 37, generator=torch.Generator().manual_seed(1)) > 0.5
    assert torch.equal(unpack_bits(pack_bits(bits), 37), bits)


@pytest.mark.parametrize(("vocab", "k"), [(49152, 64), (1000, 7), (64, 64), (300, 1), (151936, 32)])
def test_elias_fano_ids_are_exact(vocab, k):
    layout = RowLayout(vocab, k, "int8")
    g = torch.Generator().manual_seed(vocab + k)
    ids = torch.stack([torch.randperm(vocab, generator=g)[:k] for _ in range(20)]).sort(-1).values
    ids[0] = torch.arange(vocab - k, vocab)  # the largest ids: the last unary bit is used
    data = encode_ids(ids, layout)
    assert data.shape == (20, layout.idx_bytes)
    assert torch.equal(decode_ids(data, layout), ids)


def test_row_sizes_at_k64_on_a_49k_vocabulary():
    assert RowLayout(49152, 64, "int8").row_bytes == 159  # at most 160 bytes per token
    assert RowLayout(49152, 64, "fp16").row_bytes == 222
    assert RowLayout(49152, 64, "fp32").row_bytes == 512  # int32 + fp32: the uncompressed rows
    # ids cost about 2 + log2(V / k) bits each instead of 16
    assert RowLayout(49152, 64, "int8").idx_bytes * 8 / 64 < 11.6


def test_fp32_rows_are_exact():
    logp, idx = _topk(30, 500, 16)
    got_idx, got_logp = decode_rows(encode_rows(idx, logp, RowLayout(500, 16, "fp32")), RowLayout(500, 16, "fp32"))
    assert torch.equal(got_idx, idx.long()) and torch.equal(got_logp, logp)


@pytest.mark.parametrize("fmt", ["int8", "fp16"])
def test_quantized_rows_keep_ids_ranks_and_tail(fmt):
    vocab, k = 2000, 64
    logp, idx = _topk(200, vocab, k)
    layout = RowLayout(vocab, k, fmt)
    got_idx, got_logp = decode_rows(encode_rows(idx, logp, layout), layout)
    # same set of ids, sorted by descending log-prob; the top-1 is the teacher's top-1
    assert torch.equal(got_idx.sort(-1).values, idx.long().sort(-1).values)
    step = (logp[:, 0] - logp[:, -1]) / 255 if fmt == "int8" else logp[:, 0].abs() * 1e-3
    clear = logp[:, 0] - logp[:, 1] > 2 * step + 1e-3  # the top-1 is kept wherever it is not a near-tie
    assert clear.sum() > 150 and torch.equal(got_idx[clear, 0], idx[clear, 0].long())
    assert bool((got_logp[:, :-1] >= got_logp[:, 1:]).all())
    # values at the decoded ids are close to the originals: int8 within half a step plus the
    # renormalization shift, which is about the same size
    orig = torch.full((200, vocab), -torch.inf).scatter(-1, idx.long(), logp)
    err = (orig.gather(-1, got_idx) - got_logp).abs().max(-1).values
    assert bool((err <= (step * 1.2 if fmt == "int8" else 4e-3) + 1e-3).all())
    # the mass outside the top-k is kept (what losses.with_tail sees)
    tail = L.with_tail(logp)[:, -1].exp()
    got_tail = L.with_tail(got_logp)[:, -1].exp()
    assert torch.allclose(got_tail, tail, rtol=2e-3, atol=1e-6)


def test_int8_bucket_kl_is_close_to_the_uncompressed_one():
    # the (k + 1)-bucket KL of a student against the int8 rows stays within 1% of the fp32 rows'
    vocab, k = 5000, 64
    logp, idx = _topk(300, vocab, k, sharpness=4.0)
    s_logp = F.log_softmax(torch.randn(300, vocab, generator=torch.Generator().manual_seed(5)) * 4.0, -1)
    kls = {}
    for fmt in ("fp32", "int8"):
        layout = RowLayout(vocab, k, fmt)
        i, t = decode_rows(encode_rows(idx, logp, layout), layout)
        kls[fmt] = L.forward_kl(L.with_tail(s_logp.gather(-1, i)), L.with_tail(t)).mean().item()
    assert kls["int8"] == pytest.approx(kls["fp32"], rel=0.01)
