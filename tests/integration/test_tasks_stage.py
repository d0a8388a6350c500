"""Stage bodies against a real artifact store: teacher-score cache reuse, distill, benchmark, export."""

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from slmkit.artifacts import Store
from slmkit.context import StageContext
from slmkit.progress import Reporter
from slmkit.tasks.config import ScoreDistillConfig, TaskConfig
from slmkit.tasks.loading import architecture, load_scorer
from slmkit.tasks.scorers import ClassifierScorer
from slmkit.tasks.stage import export_scorer_artifact, measure_scorer, run_score_distill, task_rows
from tests.tasks_helpers import (
    minilm_dir,
    single_thread,  # noqa: F401
    smol_tokenizer,
    tiny_causal_lm,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def write_rows(path: Path, groups: int, cands: int) -> Path:
    src = Path(__file__).resolve().parents[2] / "slmkit" / "data_files" / "ranking_eval.jsonl"
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    keep = sorted({r["group"] for r in rows})[:groups]
    picked = [r for g in keep for r in [x for x in rows if x["group"] == g]][: groups * cands]
    path.write_text("".join(json.dumps(r) + "\n" for r in picked))
    return path


@pytest.fixture()
def models(tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertModel

    teacher = tmp_path / "teacher"
    tiny_causal_lm("llama", seed=11).save_pretrained(teacher)
    smol_tokenizer().save_pretrained(teacher)
    encoder = tmp_path / "encoder"  # a bare encoder, as all-MiniLM-L6-v2 ships
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(encoder)
    tok.save_pretrained(encoder)
    return teacher, encoder


def context(tmp_path, teacher, student, stream) -> StageContext:
    store = Store(tmp_path / "runs" / "r")
    out = store.begin("distill")
    recipe = SimpleNamespace(seed=0, teacher=SimpleNamespace(dtype="float32", device="cpu"))
    return StageContext(recipe=recipe, stage=SimpleNamespace(name="distill"), out_dir=out,
                        input_dir=student, input_manifest=None, teacher_dir=teacher, run_dir=store.root,
                        reporter=Reporter(stream, rich=False), work_dir=store.work_dir("distill", "k"), store=store)


def test_distill_encoder_student_reuses_teacher_cache_and_benchmarks(tmp_path, models):
    teacher, encoder = models
    assert architecture(encoder) == "BertModel"
    train = write_rows(tmp_path / "train.jsonl", 4, 10)
    task = TaskConfig(primary_metric="ndcg@5")
    cfg = ScoreDistillConfig(max_steps=4, batch_size=10)
    log = io.StringIO()
    out = run_score_distill(context(tmp_path, teacher, encoder, log), task, cfg, train)
    assert out.metrics["steps"] == 4 and out.details["scorer"] == "classifier"
    caches = list((tmp_path / "runs" / "r" / "teacher_scores").glob("v*"))
    assert len(caches) == 1 and (caches[0] / "logits.npy").is_file()
    ctx2 = context(tmp_path, teacher, encoder, log)
    run_score_distill(ctx2, task, cfg, train)
    assert "reusing teacher_scores v1" in log.getvalue()
    assert len(list((tmp_path / "runs" / "r" / "teacher_scores").glob("v*"))) == 1

    student = load_scorer(ctx2.out_dir, task)  # the saved model reloads as a classifier with its head
    assert isinstance(student, ClassifierScorer) and student.model.config.num_labels == 1

    onnx = export_scorer_artifact(ctx2.out_dir, train, task, tmp_path / "onnx", max_rows=12)
    assert onnx["fp32"]["max_abs_score_diff"] < 1e-3
    rows = task_rows(train, task, require_labels=True)
    model = measure_scorer(ctx2.out_dir, rows, task, batch_sizes=(1, 8), candidates=10, onnx_dir=tmp_path / "onnx")
    teacher_m = measure_scorer(teacher, rows, task, batch_sizes=(1,), candidates=10)
    for figures in (model["metrics"], teacher_m["metrics"], *model["onnx_metrics"].values()):
        assert 0.0 <= figures["ndcg@5"] <= 1.0 and 0.0 <= figures["auc"] <= 1.0
    assert model["onnx_metrics"]["scorer.onnx"]["auc"] == pytest.approx(model["metrics"]["auc"], abs=1e-6)
    assert set(model["speed"]) == {"torch", "onnxruntime:scorer.onnx", "onnxruntime:scorer.int8.onnx"}
    assert model["speed"]["torch"]["items_per_s@bs8"] > 0
