"""Scorer export to ONNX and int8, checked with the real onnxruntime against PyTorch scores."""

import pytest
import torch

from slmkit.errors import SlmkitError
from slmkit.tasks.config import TaskConfig
from slmkit.tasks.data import ScoringRow
from slmkit.tasks.onnx_export import export_and_verify, export_scorer, onnx_logits, trace_rows
from slmkit.tasks.scorers import make_scorer, score_rows
from tests.tasks_helpers import (
    single_thread,  # noqa: F401
    smol_tokenizer,
    tiny_bert_classifier,
    tiny_causal_lm,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def rows():
    return [ScoringRow(f"find the function {c} " + "that parses text " * c, f"json.loads(s) {i}" + " x" * (3 * i), None,
                       str(c)) for c in range(3) for i in range(4)]


@pytest.mark.parametrize("num_labels", [1, 3])
def test_encoder_classifier_fp32_and_int8_match_pytorch(tmp_path, num_labels):
    model, tok = tiny_bert_classifier(num_labels=num_labels, seed=3)
    task = TaskConfig(kind="classification", labels=["a", "b", "c"], verbalizers=[" a", " b", " c"]) \
        if num_labels == 3 else TaskConfig()
    scorer = make_scorer(model, tok, task)
    report = export_and_verify(scorer, rows(), tmp_path)
    assert report["fp32"]["max_abs_logit_diff"] < 1e-4
    assert report["int8"]["max_abs_score_diff"] < 0.05
    assert report["int8"]["bytes"] < report["fp32"]["bytes"] / 2  # weights really are int8
    # batch size and sequence length are dynamic: a batch unlike the traced one still matches
    odd = rows()[5:12]
    assert torch.allclose(onnx_logits(tmp_path / "scorer.onnx", scorer, odd, batch_size=7),
                          score_rows(scorer, odd), atol=1e-4)


def test_causal_lm_scorer_graph_matches_pytorch(tmp_path):
    scorer = make_scorer(tiny_causal_lm("qwen2", seed=4), smol_tokenizer(), TaskConfig())
    path = export_scorer(scorer, trace_rows(rows()), tmp_path / "scorer.onnx")
    got, ref = onnx_logits(path, scorer, rows(), batch_size=5), score_rows(scorer, rows())
    assert got.shape == (12, 2)
    assert torch.max(torch.abs(got - ref)).item() < 1e-4


def test_verification_fails_loudly_on_drift(tmp_path):
    model, tok = tiny_bert_classifier(num_labels=1, seed=5)
    scorer = make_scorer(model, tok, TaskConfig())
    with torch.no_grad():
        model.classifier.weight.mul_(50.0)  # large logits: int8 rounding moves probabilities a lot
    with pytest.raises(SlmkitError, match="int8 graph is not trustworthy"):
        export_and_verify(scorer, rows(), tmp_path, int8_tol=1e-9)


def test_int8_keeps_the_head_fp32_and_drifts_less_on_a_sharp_scorer(tmp_path):
    import onnx

    from slmkit.tasks.onnx_export import quantize_int8, score_head_nodes

    model, tok = tiny_bert_classifier(num_labels=1, seed=5)
    scorer = make_scorer(model, tok, TaskConfig())
    with torch.no_grad():
        model.classifier.weight.mul_(20.0)  # a sharp scorer: logits far from zero
    fp32 = export_scorer(scorer, trace_rows(rows()), tmp_path / "scorer.onnx")
    head = score_head_nodes(fp32)
    assert head and head[0].startswith("/model/classifier")
    ref = score_rows(scorer, rows())
    plain = quantize_int8(fp32, tmp_path / "plain.onnx", keep_head=False, per_channel=False)
    kept = quantize_int8(fp32, tmp_path / "kept.onnx")
    ops = {n.name: n.op_type for n in onnx.load(str(kept)).graph.node}
    # the head is still a float op, not MatMulInteger
    assert [op for name, op in ops.items() if name in head] in (["MatMul"], ["Gemm"])
    assert "MatMulInteger" in ops.values() or "DynamicQuantizeMatMul" in ops.values()
    drift = lambda p: float((onnx_logits(p, scorer, rows()) - ref).abs().max())
    assert drift(kept) < drift(plain)
    assert kept.stat().st_size < fp32.stat().st_size / 2


def test_int8_falls_back_to_an_fp32_first_block_when_the_all_int8_graph_drifts(tmp_path):
    import onnx

    from slmkit.tasks.onnx_export import block_nodes, compare, quantize_int8

    model, tok = tiny_bert_classifier(num_labels=1, seed=5)
    scorer = make_scorer(model, tok, TaskConfig())
    with torch.no_grad():
        model.classifier.weight.mul_(20.0)
    fp32 = export_scorer(scorer, trace_rows(rows()), tmp_path / "scorer.onnx")
    blocks = block_nodes(fp32)
    assert sorted(blocks) == list(range(model.config.num_hidden_layers))
    assert all("/layer.0/" in name for name in blocks[0])
    ref = score_rows(scorer, rows())
    drift = lambda p: compare(ref, onnx_logits(p, scorer, rows()))["max_abs_score_diff"]
    plain = quantize_int8(fp32, tmp_path / "plain.onnx")
    first_fp32 = quantize_int8(fp32, tmp_path / "first.onnx", keep_nodes=blocks[0])
    ops = {n.name: n.op_type for n in onnx.load(str(first_fp32)).graph.node}
    assert {ops[name] for name in blocks[0]} <= {"MatMul", "Gemm"}  # still float products
    assert drift(first_fp32) < drift(plain)
    # a bound the all-int8 graph misses and the fallback meets: the export keeps block 0 in fp32
    tol = (drift(first_fp32) + drift(plain)) / 2
    report = export_and_verify(scorer, rows(), tmp_path / "out", int8_tol=tol)
    assert report["int8"]["fp32_blocks"] == [0]
    assert report["int8"]["max_abs_score_diff"] <= tol
    # within the bound already: every block int8
    assert export_and_verify(scorer, rows(), tmp_path / "out2")["int8"]["fp32_blocks"] == []
