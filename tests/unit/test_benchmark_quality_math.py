"""Quality math against plain references on random tensors and known strings."""

import math

import pytest
import torch

from slmkit.benchmark.quality import (
    MetricSkipped,
    agreement_stats,
    contains,
    exact_match,
    lcs_length,
    normalize_answer,
    perplexity,
    retained,
    rouge_l,
    sequence_nll,
)


def _reference_nll(logits, ids, mask):
    total, n = 0.0, 0
    for t in range(1, len(ids)):
        if mask[t]:
            row = logits[t - 1].tolist()
            log_z = math.log(sum(math.exp(x) for x in row))
            total += log_z - row[ids[t]]
            n += 1
    return total, n


def test_sequence_nll_matches_a_plain_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 17, generator=g)
    ids = torch.randint(0, 17, (12,), generator=g)
    mask = torch.tensor([0, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1])
    got, n = sequence_nll(logits, ids, mask)
    want, m = _reference_nll(logits, ids.tolist(), mask.tolist())
    assert n == m == 8
    assert got == pytest.approx(want, rel=1e-9)


def test_position_zero_is_never_a_target():
    logits, ids = torch.randn(4, 5), torch.tensor([1, 2, 3, 4])
    assert sequence_nll(logits, ids, torch.tensor([1, 0, 0, 0]))[1] == 0


def test_perplexity_without_targets_is_skipped_not_infinite():
    with pytest.raises(MetricSkipped):
        perplexity(0.0, 0)
    assert perplexity(2 * math.log(3.0), 2) == pytest.approx(3.0)


def test_agreement_of_a_model_with_itself_is_exact():
    logits = torch.randn(9, 31)
    matches, kl, n = agreement_stats(logits, logits.clone())
    assert (matches, kl, n) == (9, 0.0, 9)


def test_agreement_matches_reference_kl_and_argmax():
    g = torch.Generator().manual_seed(1)
    t, m = torch.randn(20, 13, generator=g), torch.randn(20, 13, generator=g)
    matches, kl, n = agreement_stats(t, m)
    ref_kl = torch.nn.functional.kl_div(
        torch.log_softmax(m.double(), -1), torch.log_softmax(t.double(), -1), log_target=True, reduction="sum"
    )
    assert n == 20
    assert matches == int((t.argmax(-1) == m.argmax(-1)).sum())
    assert kl == pytest.approx(float(ref_kl), rel=1e-9)
    assert kl > 0


def _reference_lcs(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a)):
        for j in range(len(b)):
            table[i + 1][j + 1] = table[i][j] + 1 if a[i] == b[j] else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_lcs_matches_full_table_on_random_words():
    g = torch.Generator().manual_seed(2)
    for _ in range(50):
        a = [str(x) for x in torch.randint(0, 4, (int(torch.randint(0, 9, (1,), generator=g)),), generator=g)]
        b = [str(x) for x in torch.randint(0, 4, (int(torch.randint(0, 9, (1,), generator=g)),), generator=g)]
        assert lcs_length(a, b) == _reference_lcs(a, b)


def test_rouge_l_known_values():
    # LCS("the cat sat on the mat", "the cat on the mat") = 5: P = 5/6, R = 1
    assert rouge_l("The cat sat on the mat.", "the cat on the mat") == pytest.approx(
        2 * (5 / 6) / (5 / 6 + 1)
    )
    assert rouge_l("Paris", "paris!") == 1.0
    assert rouge_l("London", "Paris") == 0.0
    assert rouge_l("", "") == 1.0 and rouge_l("", "x") == 0.0


def test_exact_match_and_contains_normalise_case_and_punctuation():
    assert normalize_answer("  The  Answer: PARIS! ") == "the answer paris"
    assert exact_match("Paris.", "paris") == 1.0
    assert exact_match("It is Paris", "Paris") == 0.0
    assert contains("It is Paris, of course", "paris") == 1.0
    assert contains("Parisian", "Paris") == 0.0  # whole words only
    assert contains("anything", "") == 0.0


def test_retained_inverts_lower_is_better_figures():
    assert retained(0.9, 1.0, higher_is_better=True) == pytest.approx(0.9)
    assert retained(20.0, 10.0, higher_is_better=False) == pytest.approx(0.5)
    assert retained(None, 1.0, True) is None
