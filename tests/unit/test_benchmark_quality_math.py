"""Quality math against plain references on random tensors and known strings."""

import math

import pytest
import torch

from slmkit.benchmark.quality import (
    EvalSet,
    MetricSkipped,
    agreement_stats,
    contains,
    exact_match,
    judge_answers,
    lcs_length,
    mean_logprob,
    normalize_answer,
    perplexity_metric,
    relative_likelihood,
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


class FixedLM:
    """Logits that depend only on the previous token: a bigram table (deterministic, batch-free)."""

    backend = "fixed"

    def __init__(self, vocab=11, seed=0):
        self.table = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed))

    def logits(self, seqs):
        return [self.table[torch.tensor(s)] for s in seqs]


def _examples(specs):
    from slmkit.data import Example

    return [Example(ids, mask, prompt_ids=ids[:2], source=f"e{i}") for i, (ids, mask) in enumerate(specs)]


def test_perplexity_keeps_per_example_parts_and_skips_without_targets():
    lm = FixedLM()
    exs = _examples([([1, 2, 3, 4], [0, 0, 1, 1]), ([5, 6, 7], [0, 1, 1]), ([8, 9], [0, 1])])
    pe = perplexity_metric(EvalSet(exs, None, 4, batch_size=2), lm)["perplexity"]
    parts = [_reference_nll(lm.logits([e.input_ids])[0], e.input_ids, e.loss_mask) for e in exs]
    assert pe.num.tolist() == pytest.approx([p[0] for p in parts]) and pe.den.tolist() == [2, 2, 1]
    assert pe.ids == ("e0", "e1", "e2")
    with pytest.raises(MetricSkipped):
        perplexity_metric(EvalSet(_examples([([1, 2], [0, 0])]), None, 4), lm)


def test_mean_logprob_and_relative_likelihood():
    lm = FixedLM()
    seq = [1, 2, 3, 4, 5]
    logits = lm.logits([seq])[0]
    want = sum(torch.log_softmax(logits[t - 1], -1)[seq[t]].item() for t in (3, 4)) / 2
    assert mean_logprob(logits, seq, 3) == pytest.approx(want, rel=1e-6)
    assert mean_logprob(logits, seq, 5) == float("-inf")  # no answer tokens
    assert relative_likelihood(-2.0, -1.0) == pytest.approx(math.exp(-1.0))
    assert relative_likelihood(-0.5, -1.0) == 1.0 and relative_likelihood(float("-inf"), -1.0) == 0.0


def test_judge_answers_scores_the_teachers_own_answers_as_one():
    lm = FixedLM()
    exs = _examples([([1, 2], [0, 0]), ([3, 4], [0, 0]), ([5, 6], [0, 0])])
    ev = EvalSet(exs, None, 4, batch_size=2)
    ev.extras["teacher_answers"] = [[7, 8], [9], [10, 1]]
    assert judge_answers(lm, ev, ev.extras["teacher_answers"]).num.tolist() == [1.0, 1.0, 1.0]
    other = judge_answers(lm, ev, [[7, 8], [2], [10, 1]])
    t = lm.logits([[3, 4, 9]])[0]
    m = lm.logits([[3, 4, 2]])[0]
    want = min(1.0, math.exp(mean_logprob(m, [3, 4, 2], 2) - mean_logprob(t, [3, 4, 9], 2)))
    assert other.num.tolist() == pytest.approx([1.0, want, 1.0]) and other.ids == ("e0", "e1", "e2")


def test_judging_several_models_scores_the_teachers_own_answers_once():
    class CountingLM(FixedLM):
        seen: list = []

        def logits(self, seqs):
            self.seen.extend(map(tuple, seqs))
            return super().logits(seqs)

    lm = CountingLM()
    exs = _examples([([1, 2], [0, 0]), ([3, 4], [0, 0])])
    ev = EvalSet(exs, None, 4, batch_size=2)
    ev.extras["teacher_answers"] = [[7, 8], [9]]
    first = judge_answers(lm, ev, [[5], [6]]).num.tolist()
    second = judge_answers(lm, ev, [[5], [6]]).num.tolist()
    assert first == second
    # the teacher's two answers once, each model's two answers every time
    assert sorted(lm.seen) == sorted([(1, 2, 7, 8), (3, 4, 9)] + [(1, 2, 5), (3, 4, 6)] * 2)


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
