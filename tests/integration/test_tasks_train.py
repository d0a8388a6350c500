"""Score distillation end to end on tiny models: an LLM-scorer teacher, encoder and decoder students."""

from pathlib import Path

import numpy as np
import pytest
import torch

from slmkit.tasks.config import ScoreDistillConfig, ScoreKDConfig, TaskConfig
from slmkit.tasks.data import load_rows
from slmkit.tasks.evaluate import evaluate, scoring_speed, spearman
from slmkit.tasks.losses import positive_margin, score_kd_loss
from slmkit.tasks.metrics import group_indices
from slmkit.tasks.scorers import make_scorer, score_rows
from slmkit.tasks.train import distill_scorer, read_teacher_cache, teacher_logits, write_teacher_cache
from tests.tasks_helpers import (
    single_thread,  # noqa: F401
    smol_tokenizer,
    tiny_bert_classifier,
    tiny_causal_lm,
)

DATA = Path(__file__).resolve().parents[2] / "slmkit" / "data_files"

pytestmark = pytest.mark.usefixtures("single_thread")


def train_rows(groups=6):
    rows = load_rows(DATA / "ranking_train.jsonl", [0, 1], require_labels=True)
    keep = sorted({r.group for r in rows})[:groups]
    return [r for r in rows if r.group in keep]


def teacher_scores(rows, task):
    scorer = make_scorer(tiny_causal_lm("llama", seed=7), smol_tokenizer(), task)
    return teacher_logits(scorer, rows, batch_size=8)


def bert(seed=0, dropout=0.1):
    model, tok = tiny_bert_classifier(num_labels=1, seed=seed)
    if dropout == 0:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    return model, tok


@pytest.mark.parametrize("kind", ["kl", "bce", "listwise_kl"])
def test_encoder_student_learns_llm_teacher_scores(kind):
    task = TaskConfig(kd=ScoreKDConfig(kind=kind, temperature=1.0, hard_label_weight=0.0))
    rows = train_rows()
    teacher = teacher_scores(rows, task)
    teacher = (teacher - teacher.mean(0)) * 20  # the random tiny teacher is nearly flat: spread it
    model, tok = bert()
    student = make_scorer(model, tok, task)
    groups = torch.tensor([int(r.group.split("-")[1]) for r in rows])

    def loss():  # the objective being trained: listwise only constrains order within a group
        return score_kd_loss(score_rows(student, rows), teacher, kind=kind, temperature=1.0, groups=groups).item()

    before = loss()
    cfg = ScoreDistillConfig(max_steps=60, batch_size=16, lr=3e-3, warmup_steps=2)
    out = distill_scorer(student, rows, teacher, task, cfg, seed=0)
    after = loss()
    assert out["steps"] == 60 and np.isfinite(out["final_loss"])
    if kind == "bce":  # bce is offset by the teacher's entropy; compare the KL part
        entropy = score_kd_loss(teacher, teacher, kind="bce", temperature=1.0).item()
        before, after = before - entropy, after - entropy
    assert after < 0.5 * before, (before, after)
    s_pos, t_pos = positive_margin(score_rows(student, rows)).numpy(), positive_margin(teacher).numpy()
    if kind == "listwise_kl":  # listwise constrains order within each context's list only
        per_group = [spearman(s_pos[idx], t_pos[idx]) for idx in group_indices([r.group for r in rows]).values()]
        assert np.mean(per_group) > 0.5, per_group
    else:
        assert spearman(s_pos, t_pos) > 0.5


def test_hard_labels_alone_teach_the_ground_truth():
    task = TaskConfig(kd=ScoreKDConfig(kind="kl", hard_label_weight=1.0))
    rows = train_rows(4)
    model, tok = bert()
    student = make_scorer(model, tok, task)
    flat = torch.zeros(len(rows), 2)  # the teacher carries no signal: only labels can teach
    distill_scorer(student, rows, flat, task, ScoreDistillConfig(max_steps=80, batch_size=32, lr=3e-3), seed=0)
    metrics, _ = evaluate(score_rows(student, rows), rows, task)
    assert metrics["auc"] > 0.9 and metrics["mrr"] > 0.8


class StopAt:
    """A reporter that dies at a given step, as a kill would."""

    def __init__(self, step):
        self.step = step

    def info(self, msg):
        if f"step {self.step}/" in msg:
            raise KeyboardInterrupt


def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path):
    task = TaskConfig()
    rows = train_rows(4)
    teacher = teacher_scores(rows, task) * 10
    cfg = ScoreDistillConfig(max_steps=20, batch_size=8, lr=1e-3, checkpoint_every=10)
    straight, tok = bert(dropout=0)
    distill_scorer(make_scorer(straight, tok, task), rows, teacher, task, cfg, seed=3)
    resumed, tok = bert(dropout=0)
    with pytest.raises(KeyboardInterrupt):
        distill_scorer(make_scorer(resumed, tok, task), rows, teacher, task, cfg, seed=3, work_dir=tmp_path,
                       reporter=StopAt(20))
    assert (tmp_path / "score_kd.pt").is_file()
    fresh, tok = bert(dropout=0)  # a new process: weights come from the checkpoint only
    out = distill_scorer(make_scorer(fresh, tok, task), rows, teacher, task, cfg, seed=3, work_dir=tmp_path)
    assert out["steps"] == 20
    for a, b in zip(straight.state_dict().values(), fresh.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)


def test_teacher_cache_round_trip_and_refuses_other_rows(tmp_path):
    from slmkit.errors import InputError

    rows = train_rows(2)
    logits = torch.randn(len(rows), 2)
    write_teacher_cache(tmp_path, logits, rows)
    assert torch.equal(read_teacher_cache(tmp_path, rows), logits)
    with pytest.raises(InputError, match="different rows"):
        read_teacher_cache(tmp_path, rows[:-1])


def test_speed_figures_for_a_scorer():
    task = TaskConfig()
    model, tok = bert()
    scorer = make_scorer(model, tok, task)
    rows = train_rows(3)
    out = scoring_speed(lambda r: score_rows(scorer, r), rows, batch_sizes=(1, 4), candidates=5, min_items=8)
    assert set(out) >= {"items_per_s@bs1", "items_per_s@bs4", "items_per_s@5_per_context",
                        "context_latency_p99_ms"}
    assert out["contexts_timed"] == 3 and out["items_per_s@bs4"] > 0
    assert out["context_latency_p99_ms"] >= out["context_latency_p50_ms"]


def test_causal_lm_student_learns_teacher_verbalizer_scores():
    task = TaskConfig(kd=ScoreKDConfig(kind="kl"))
    rows = train_rows(3)
    teacher = teacher_scores(rows, task) * 20
    student = make_scorer(tiny_causal_lm("qwen2", seed=8), smol_tokenizer(), task)
    before = score_kd_loss(score_rows(student, rows), teacher, kind="kl", temperature=1.0).item()
    distill_scorer(student, rows, teacher, task, ScoreDistillConfig(max_steps=30, batch_size=8, lr=3e-3), seed=0)
    after = score_kd_loss(score_rows(student, rows), teacher, kind="kl", temperature=1.0).item()
    assert after < 0.5 * before, (before, after)
    assert not student.model.training  # handed back in eval mode
