"""Pure functions of the quantize / export backends, checked against plain references."""

import numpy as np
import pytest

from slmkit.errors import InputError
from slmkit.quantize.config import GgufOptions
from slmkit.quantize.gguf_writer import encode_tensor, permute_qk, tensor_type
from slmkit.runtimes.config import VerifyConfig
from slmkit.runtimes.verify import compare_logits, judge


def permute_reference(w: np.ndarray, n_head: int) -> np.ndarray:
    """Row by row: llama.cpp's row 2*i (+1) of a head is HF's row i (+ half) of that head."""
    head_dim = w.shape[0] // n_head
    half = head_dim // 2
    out = np.empty_like(w)
    for h in range(n_head):
        for i in range(half):
            out[h * head_dim + 2 * i] = w[h * head_dim + i]
            out[h * head_dim + 2 * i + 1] = w[h * head_dim + half + i]
    return out


@pytest.mark.parametrize("n_head,head_dim", [(4, 16), (2, 8), (3, 64)])
def test_permute_qk_matches_reference(n_head, head_dim):
    w = np.random.default_rng(0).standard_normal((n_head * head_dim, 24)).astype(np.float32)
    np.testing.assert_array_equal(permute_qk(w, n_head), permute_reference(w, n_head))


def test_permute_qk_is_undone_by_transformers_gguf_loader():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.random.default_rng(1).standard_normal((2 * 16, 32)).astype(np.float32)
    back = LlamaTensorProcessor()._reverse_permute_weights(permute_qk(w, 2), 2, 2)
    np.testing.assert_array_equal(back, w)


def test_tensor_type_policy():
    from gguf import GGMLQuantizationType as T

    q4 = GgufOptions(type="Q4_0")
    assert tensor_type("blk.0.attn_norm.weight", (64,), q4) == T.F32
    assert tensor_type("blk.0.ffn_up.weight", (128, 64), q4) == T.Q4_0
    assert tensor_type("token_embd.weight", (384, 64), q4) == T.Q8_0  # output kept at 8 bits
    assert tensor_type("output.weight", (384, 64), GgufOptions(type="Q4_0", output_type="F16")) == T.F16
    assert tensor_type("blk.0.ffn_up.weight", (128, 40), q4) == T.F16  # 40 is not a multiple of 32


@pytest.mark.parametrize("name,tol", [("Q8_0", 0.02), ("Q4_0", 0.25)])
def test_encode_tensor_roundtrips_within_quantization_error(name, tol):
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    x = np.random.default_rng(2).standard_normal((8, 64)).astype(np.float32)
    back = quants.dequantize(encode_tensor(x, T[name]), T[name])
    assert np.abs(back - x).max() < tol * np.abs(x).max()


def test_encode_tensor_names_the_alternatives_when_gguf_cannot_write_a_type():
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    try:
        quants.quantize(np.zeros((1, 256), np.float32), T.Q4_K)
    except NotImplementedError:
        with pytest.raises(InputError, match="Q4_0"):
            encode_tensor(np.zeros((1, 256), np.float32), T.Q4_K)
    else:  # a newer gguf writes Q4_K: then encoding must work
        assert encode_tensor(np.zeros((1, 256), np.float32), T.Q4_K).dtype == np.uint8


def compare_reference(ref, got):
    agree = total = 0
    diff = 0.0
    for r, g in zip(ref, got):
        for t in range(r.shape[0]):
            agree += int(np.argmax(r[t]) == np.argmax(g[t]))
            total += 1
            diff = max(diff, max(abs(float(a) - float(b)) for a, b in zip(r[t], g[t])))
    return agree / total, diff


def test_compare_logits_matches_plain_loop():
    rng = np.random.default_rng(3)
    ref = [rng.standard_normal((5, 11)).astype(np.float32), rng.standard_normal((3, 11)).astype(np.float32)]
    got = [r + rng.normal(0, 0.5, r.shape).astype(np.float32) for r in ref]
    m = compare_logits(ref, got)
    top1, diff = compare_reference(ref, got)
    assert m["top1_agreement"] == pytest.approx(top1)
    assert m["max_abs_logit_diff"] == pytest.approx(diff, rel=1e-6)
    assert m["positions"] == 8


def test_compare_logits_identical_inputs_agree_fully():
    ref = [np.random.default_rng(4).standard_normal((6, 9)).astype(np.float32)]
    assert compare_logits(ref, [ref[0].copy()]) == {
        "top1_agreement": 1.0, "max_abs_logit_diff": 0.0, "flip_margin": 0.0, "positions": 6}


def test_flip_margin_is_the_sources_largest_lead_where_the_top_tokens_differ():
    rng = np.random.default_rng(5)
    ref = [rng.standard_normal((7, 13)).astype(np.float32) for _ in range(2)]
    got = [r + rng.normal(0, 0.8, r.shape).astype(np.float32) for r in ref]
    leads = [float(r[t].max() - r[t, g[t].argmax()]) for r, g in zip(ref, got) for t in range(r.shape[0])]
    assert max(leads) > 0  # the noise flips some positions
    assert compare_logits(ref, got)["flip_margin"] == pytest.approx(max(leads), rel=1e-6)


def test_judge_thresholds():
    cfg = VerifyConfig(min_top1_quantized=0.9, max_abs_diff_fp32=1e-3)
    assert judge({"top1_agreement": 0.95, "max_abs_logit_diff": 3.0}, "quantized", cfg) == []
    assert "0.850" in judge({"top1_agreement": 0.85, "max_abs_logit_diff": 0.1}, "quantized", cfg)[0]
    assert judge({"top1_agreement": 1.0, "max_abs_logit_diff": 5e-4}, "fp32", cfg) == []
    problems = judge({"top1_agreement": 0.99, "max_abs_logit_diff": 2e-3}, "fp32", cfg)
    assert len(problems) == 2
    # a near-tie flipped within the allowed drift is rounding, a clear lead lost is a failure
    assert judge({"top1_agreement": 0.99, "max_abs_logit_diff": 8e-4, "flip_margin": 1.5e-3}, "fp32", cfg) == []
    problems = judge({"top1_agreement": 0.99, "max_abs_logit_diff": 2e-3, "flip_margin": 3e-3}, "fp32", cfg)
    assert len(problems) == 2 and "0.990" in problems[0] and "0.003" in problems[0]
    assert judge({"top1_agreement": 1.0, "max_abs_logit_diff": 0.2}, "fp16", cfg) == []
