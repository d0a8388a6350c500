"""Pure parts of the distill trainer: schedule, data order, target selection."""

import math

import pytest
import torch

from slmkit.distill.trainer import batch_indices, lr_factor, select_targets, use_compile


def test_lr_warmup_then_cosine_to_min_ratio():
    f = [lr_factor(s, warmup=2, total=10, min_ratio=0.1) for s in range(11)]
    assert f[0] == pytest.approx(0.5) and f[1] == pytest.approx(1.0)
    assert f[2] == pytest.approx(1.0)
    assert f[6] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f[10] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[2:], f[3:]))


def test_batch_indices_cover_each_epoch_once_and_depend_only_on_seed_and_step():
    n, g = 10, 4
    stream = [i for s in range(5) for i in batch_indices(n, g, s, seed=3)]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert batch_indices(n, g, 2, seed=3) == stream[8:12]  # random access: what a resume needs
    assert batch_indices(n, g, 2, seed=4) != stream[8:12]


def test_select_targets_uses_next_token_mask_and_skips_padding():
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 0]])
    sel, tgt = select_targets(ids, mask)
    assert sel.tolist() == [1, 2, 4]  # row-major flat positions predicting a counted token
    assert tgt.tolist() == [7, 8, 10]


def test_compile_auto_stays_off_for_tiny_vocabularies_and_explicit_settings_win():
    cpu = torch.device("cpu")
    assert use_compile("auto", 256, cpu) is False  # test models: no compile time
    assert use_compile(False, 49152, cpu) is False
    assert use_compile(True, 256, cpu) is True
