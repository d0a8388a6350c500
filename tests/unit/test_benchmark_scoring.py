"""The predictive benchmark's results document from synthetic scores: baselines, intervals, retention
above chance on the primary figure, and the teacher-at-chance note that fails retention gates."""

import numpy as np
import pytest
import torch

from slmkit.benchmark import baselines as B
from slmkit.benchmark.config import BenchmarkConfig
from slmkit.benchmark.gates import failure_lines
from slmkit.benchmark.scoring import scoring_results
from slmkit.tasks.config import TaskConfig
from slmkit.tasks.data import ScoringRow
from slmkit.tasks.evaluate import evaluate, label_probs

TASK = TaskConfig(primary_metric="ndcg@10")


@pytest.fixture(autouse=True)
def fewer_resamples(monkeypatch):
    from slmkit.tasks import bootstrap

    monkeypatch.setattr(bootstrap, "N_RESAMPLES", 300)  # the figures under test do not depend on the count


def rows_of(groups=30, cands=10, seed=0) -> list[ScoringRow]:
    rng = np.random.default_rng(seed)
    out = []
    for g in range(groups):
        hit = rng.integers(cands)
        out += [ScoringRow(f"query {g}", f"item {c}", int(c == hit), f"q{g}") for c in range(cands)]
    return out


def logits(rows, skill: float, seed: int) -> torch.Tensor:
    """A binary logit per row: skill * (+1 relevant / -1 not) plus unit noise."""
    rng = np.random.default_rng(seed)
    y = np.array([r.label for r in rows])
    return torch.tensor(skill * (2 * y - 1) + rng.normal(size=len(rows)), dtype=torch.float32)[:, None]


def variant(rows, z, teacher_z, fmt="hf", size=1000) -> dict:
    from slmkit.tasks.evaluate import agreement

    quality = {**evaluate(z, rows, TASK)[0], **agreement(z, teacher_z)}
    keep = {"auc", "accuracy", "log_loss", "ece", "ndcg@10", "mrr", "teacher_label_agreement",
            "teacher_score_spearman"}
    return {"format": fmt, "size_bytes": size, "params": size, "quality": {k: v for k, v in quality.items() if k in keep},
            "notes": [], "_probs": label_probs(z)}


def results_for(rows, teacher_skill, student_skill, gates=None, prior=None):
    t, s = logits(rows, teacher_skill, 1), logits(rows, student_skill, 2)
    docs = [{"id": "teacher", "variants": [variant(rows, t, t)]},
            {"id": "student", "variants": [variant(rows, s, t, size=100)]}]
    speed = [{"model": "teacher", "format": "hf", "backend": "torch", "items_per_s@20_per_context": 10.0},
             {"model": "student", "format": "hf", "backend": "torch", "items_per_s@20_per_context": 80.0}]
    cfg = BenchmarkConfig(quality=["scoring"], gates=gates or {})
    return scoring_results(docs, speed, rows, TASK, cfg, prior=prior)


def test_retention_is_measured_above_chance_with_intervals_that_hold_the_point():
    rows = rows_of()
    r = results_for(rows, teacher_skill=3.0, student_skill=2.0)
    chance = B.random_ranking_baseline([x.label for x in rows], [x.group for x in rows], k=10)
    assert r["baselines"]["ndcg@10"]["value"] == pytest.approx(chance["ndcg@10"])
    assert r["baselines"]["mrr"]["value"] == pytest.approx(chance["mrr"])
    assert r["baselines"]["auc"]["value"] == 0.5
    assert r["baselines"]["accuracy"]["value"] == pytest.approx(0.9)
    teacher, student = (m["variants"][0] for m in r["models"])
    t, s, b = teacher["quality"]["ndcg@10"], student["quality"]["ndcg@10"], chance["ndcg@10"]
    assert student["above_baseline"]["ndcg@10"] == pytest.approx((s - b) / (t - b))
    assert student["quality_retained"] == pytest.approx((s - b) / (t - b))
    assert student["quality_retained_plain"] == pytest.approx(s / t)
    for v in (teacher, student):
        for f, ci in v["quality_ci"].items():
            assert ci[0] <= v["quality"][f] <= ci[1], f
        for f, ci in v["above_baseline_ci"].items():
            assert ci[0] <= v["above_baseline"][f] <= ci[1], f
    h = r["headline"]
    assert h["quality_retained_basis"] == "above_baseline" and h["baseline"] == pytest.approx(b)
    assert h["quality_retained_ci"][0] <= h["quality_retained"] <= h["quality_retained_ci"][1]
    assert h["quality_retained_plain"] == pytest.approx(s / t) and "quality_retained_note" not in h
    assert h["scoring_speedup"] == 8.0 and h["size_ratio"] == 0.1
    assert set(student["per_example"]) == {"ndcg@10", "mrr", "accuracy", "log_loss"}


def test_a_teacher_at_chance_gets_a_note_and_fails_retention_gates():
    rows = rows_of()
    r = results_for(rows, teacher_skill=0.0, student_skill=0.0,
                    gates={"quality_retained": ">=0.5", "quality_retained_low": ">=0.0", "auc": ">=0.0"})
    h = r["headline"]
    assert h["quality_retained_note"].startswith("the teacher cannot do this task: its ndcg@10")
    verdicts = {g["figure"]: g for g in r["gates"]}
    assert not verdicts["quality_retained"]["passed"] and not verdicts["quality_retained_low"]["passed"]
    assert verdicts["auc"]["passed"]  # other figures are still checked on their values
    assert any(line.startswith("quality_retained fails: the teacher cannot do this task")
               for line in failure_lines(r["gates"]))


def test_log_loss_baseline_uses_the_training_prior():
    rows = rows_of(groups=20)
    y = [x.label for x in rows]
    r = results_for(rows, 3.0, 2.0, prior=np.array([0.875, 0.125]))
    assert r["baselines"]["log_loss"]["value"] == pytest.approx(B.base_rate_log_loss(y, [0.875, 0.125]))
    assert "training labels" in r["baselines"]["log_loss"]["what"]
