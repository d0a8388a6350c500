"""Packed micro-batches: the same loss, targets and gradient as one example per row, fewer rows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distill_helpers import VOCAB, examples, job, tiny_llama

from slmkit.distill.trainer import (
    _forward,
    _micro_batches,
    _setup,
    bucket_width,
    make_batch,
    pack_rows,
    supports_packing,
    train,
)


def test_bucket_widths_and_first_fit_packing():
    assert [bucket_width(n) for n in (1, 64, 65, 200, 300)] == [64, 64, 128, 256, 512]
    assert bucket_width(300, cap=320) == 320 and bucket_width(40, cap=48) == 64
    place = pack_rows([10, 60, 30, 20, 64], 64)
    rows: dict[int, list] = {}
    for n, (r, o) in zip([10, 60, 30, 20, 64], place):
        rows.setdefault(r, []).append((o, o + n))
    for spans in rows.values():  # inside the row, no overlaps
        spans.sort()
        assert spans[-1][1] <= 64 and all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert len(rows) == 3  # 184 tokens in rows of 64


def test_packed_batch_selects_the_same_targets_in_the_same_order():
    exs = examples(8)
    plain, packed = make_batch(exs, 0, "cpu"), make_batch(exs, 0, "cpu", pack=True)
    assert packed.tensors["input_ids"].shape[0] < plain.tensors["input_ids"].shape[0]
    assert torch.equal(packed.targets, plain.targets)
    flat_ids = packed.tensors["input_ids"].reshape(-1)
    # the token at each selected position is the one before its target, as unpacked
    assert torch.equal(flat_ids[packed.sel], plain.tensors["input_ids"].reshape(-1)[plain.sel])


def test_llama_keeps_packed_sequences_apart():
    assert supports_packing(tiny_llama(2), VOCAB)


@pytest.mark.parametrize("hidden", [False, True])
def test_packed_and_unpacked_steps_have_the_same_loss_and_gradients(tmp_path, hidden):
    loss = {"ce_weight": 0.3, "hidden": {"kind": "mse"}} if hidden else {"ce_weight": 0.3}
    grads, losses = {}, {}
    for pack in (False, True):
        j = job(tmp_path / str(pack), batch_size=6, packing=pack, loss=loss, max_steps=1)
        run = _setup(j, None)
        assert run.pack is pack
        batches, _ = _micro_batches(run, 0)  # by hand, to keep the gradients
        stats: dict = {}
        loss_sum, hid = _forward(run, batches[0], stats)
        value = loss_sum / batches[0].tokens + (run.job.cfg.loss.hidden.weight * hid if hid is not None else 0)
        value.backward()
        losses[pack] = value.item()
        grads[pack] = {n: p.grad.clone() for n, p in run.module.named_parameters() if p.grad is not None}
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)
    assert grads[True].keys() == grads[False].keys()
    for n in grads[False]:
        assert torch.allclose(grads[True][n], grads[False][n], atol=1e-6, rtol=1e-4), n


def test_packed_training_ends_where_unpacked_training_does(tmp_path):
    a = job(tmp_path / "a", max_steps=3, batch_size=4, packing=False)
    b = job(tmp_path / "b", max_steps=3, batch_size=4, packing=True)
    ra, rb = train(a), train(b)
    assert rb.final["loss"] == pytest.approx(ra.final["loss"], rel=1e-4)
    assert rb.final["eval_kl"] == pytest.approx(ra.final["eval_kl"], rel=1e-4)
    sa, sb = a.student.state_dict(), b.student.state_dict()
    assert all(torch.allclose(sa[k], sb[k], atol=1e-6) for k in sa)


@pytest.mark.slow
def test_variable_lengths_compile_a_few_graphs_not_one_per_batch(tmp_path):
    # compiled decoder layers over batches of lengths 6..120: bucketed widths and packing leave a
    # handful of graphs (static first shape, then one dynamic one; grad and no-grad each), not one per batch
    import torch._dynamo.utils as dynamo_utils

    torch._dynamo.reset()
    dynamo_utils.counters.clear()
    j = job(tmp_path, max_steps=8, batch_size=3, compile_layers=True, eval_every=100, checkpoint_every=100)
    j.train = examples(24, min_len=6, max_len=120)
    train(j)
    assert dynamo_utils.counters["stats"]["unique_graphs"] <= 6
    torch._dynamo.reset()
