"""Calibrated 4/8-bit quantization: the formats' grids against their own quantizers, GPTQ against a
plain one-column-at-a-time reference, and QuantEase's descent, on small seeded random layers."""

import numpy as np
import pytest
import torch

from slmkit.quantize.gptq import GroupScales, gptq, gptq_columns, upper_inverse_cholesky
from slmkit.quantize.grids import (
    Format,
    QuantizedWeight,
    dequantize,
    grid_for,
    nearest_codes,
    per_column,
    quantize,
    rtn,
    rtn_scales,
)
from slmkit.quantize.quantease import quantease
from slmkit.quantize.reconstruction import HessianAccumulator, objective

GRIDS = [
    ("onnx", 4, 32, True),
    ("onnx", 4, 16, False),
    ("onnx", 8, 64, True),
    ("gguf", 4, 32, True),
    ("gguf", 8, 32, True),
    ("compressed-tensors", 4, 32, True),
]


def correlated_layer(seed: int, out: int = 48, cols: int = 128, n: int = 512):
    """Weights and H = 2 X^T X / n for inputs with correlated features and uneven scales (H not diagonal)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.eye(cols) + 1.5 * torch.randn(cols, cols, generator=g) / cols**0.5
    x = (torch.randn(n, cols, generator=g) @ mix) * torch.rand(cols, generator=g).add(0.2)
    w = 0.05 * torch.randn(out, cols, generator=g)
    return w, 2 * x.T @ x / n


# --- onnxruntime MatMulNBits -------------------------------------------------------------------


def ort_reference(w: np.ndarray, bits: int, block: int, symmetric: bool):
    """onnxruntime's own RTN (the C++ MLAS quantizer matmul_nbits_quantizer.py calls): codes, scales, zeros."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

    out, cols = w.shape
    kb, per_byte = -(-cols // block), 8 // bits
    packed = np.zeros((out, kb, block // per_byte), np.uint8)
    zp = np.zeros((out, -(-kb // per_byte)), np.uint8)
    scales = np.zeros((out, kb), w.dtype)
    fn = quantize_matmul_4bits if bits == 4 else quantize_matmul_8bits
    fn(packed, np.ascontiguousarray(w.T), scales, zp, block, out, cols, symmetric)
    if bits == 4:
        packed = np.stack([packed & 15, packed >> 4], -1)
        zp = np.stack([zp & 15, zp >> 4], -1)
    return packed.reshape(out, -1)[:, :cols], scales, zp.reshape(out, -1)[:, :kb]


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("block,cols", [(16, 64), (32, 96), (128, 256), (32, 80)])
def test_onnx_rtn_is_onnxruntimes_own(bits, symmetric, block, cols):
    w = torch.randn(40, cols, generator=torch.Generator().manual_seed(cols + bits))
    w[:3, :block] = 0.0
    w[1, :3] = torch.tensor([0.5, -0.5, 0.25])  # equal max and |min|: MLAS takes the min
    step = 8.0 / 2 ** (bits - 1)  # with -8 the largest magnitude the scale is this power of two
    w[2, :8] = torch.tensor([-8.0] + [(k + 0.5) * step for k in range(-3, 4)])  # exact halves: roundf
    q_ref, s_ref, z_ref = ort_reference(w.numpy(), bits, block, symmetric)
    qw = rtn(w, grid_for("onnx", bits, block, symmetric))
    np.testing.assert_array_equal(qw.q.numpy(), q_ref)
    np.testing.assert_array_equal(qw.scale.numpy(), s_ref)
    if symmetric:
        assert qw.zero is None
    else:
        np.testing.assert_array_equal(qw.zero.numpy(), z_ref)


def test_onnx_fp16_scales_are_onnxruntimes_own():
    w = torch.randn(24, 128, generator=torch.Generator().manual_seed(3)).half()
    for symmetric in (True, False):
        q_ref, s_ref, z_ref = ort_reference(w.numpy(), 4, 32, symmetric)
        qw = rtn(w.float(), grid_for("onnx", 4, 32, symmetric, torch.float16))
        assert qw.scale.dtype == torch.float16
        np.testing.assert_array_equal(qw.q.numpy(), q_ref)
        np.testing.assert_array_equal(qw.scale.numpy(), s_ref)


def run_matmulnbits(qw: QuantizedWeight) -> np.ndarray:
    """The weight the onnxruntime kernel multiplies by: MatMulNBits on the identity, [in, out]."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    grid, (out, cols) = qw.grid, qw.q.shape
    q = qw.q.numpy()
    packed = q.reshape(out, -1, grid.block_size)
    zero = None if qw.zero is None else qw.zero.numpy()
    if grid.bits == 4:
        packed = packed[..., 0::2] | (packed[..., 1::2] << 4)
        zero = None if zero is None else zero[:, 0::2] | (zero[:, 1::2] << 4)
    inits = [numpy_helper.from_array(packed, "B"), numpy_helper.from_array(qw.scale.numpy().reshape(-1), "S")]
    if zero is not None:
        inits.append(numpy_helper.from_array(zero.reshape(-1), "Z"))
    inputs = ["X", "B", "S"] + ([] if zero is None else ["Z"])
    attrs = dict(K=cols, N=out, bits=grid.bits, block_size=grid.block_size)
    node = helper.make_node("MatMulNBits", inputs, ["Y"], domain="com.microsoft", **attrs)
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [cols, cols])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [cols, out])
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y], inits),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"X": np.eye(cols, dtype=np.float32)})[0]


@pytest.mark.parametrize("bits,symmetric", [(4, True), (4, False), (8, True), (8, False)])
def test_onnx_dequantize_is_what_the_runtime_multiplies_by(bits, symmetric):
    w, h = correlated_layer(5, out=16, cols=64)
    qw, _ = gptq(w, h, grid_for("onnx", bits, 32, symmetric))
    np.testing.assert_array_equal(run_matmulnbits(qw).T, qw.dequantize().numpy())


# --- GGUF Q4_0 / Q8_0 ----------------------------------------------------------------------------


def gguf_blocks(w: torch.Tensor, name: str):
    """gguf-py's own quantization, unpacked into codes [out, in] and fp16 d [out, in/32]."""
    from gguf import GGMLQuantizationType, quants

    qtype = GGMLQuantizationType[name]
    raw = quants.quantize(w.numpy(), qtype)
    blocks = raw.reshape(w.shape[0], -1, raw.shape[1] // (w.shape[1] // 32))
    d = blocks[..., :2].copy().view(np.float16)[..., 0]
    if name == "Q4_0":
        qs = blocks[..., 2:]
        codes = np.concatenate([qs & 15, qs >> 4], axis=-1)
    else:
        codes = blocks[..., 2:].copy().view(np.int8)
    return codes.reshape(w.shape), d, quants.dequantize(raw, qtype)


@pytest.mark.parametrize("bits,name", [(4, "Q4_0"), (8, "Q8_0")])
def test_gguf_rtn_is_gguf_pys_own(bits, name):
    w = torch.randn(33, 256, generator=torch.Generator().manual_seed(bits))
    w[0, :32] = 0.0
    w[1, :32] = torch.linspace(-1, 1, 32)  # equal magnitudes at both ends: gguf takes the first
    w[2, :32] = torch.arange(32) / 4 - 4  # Q4_0: d = 0.5, every code lands on an exact half
    w[3, :32] = torch.arange(32) - 15.5  # Q8_0 with amax 127 below: d = 1, exact halves again
    w[3, 0] = -127.0
    w[3, 1] = float(np.nextafter(np.float32(0.5), np.float32(0)))  # floor(x + 0.5) would give 1, roundf 0
    codes, d, deq = gguf_blocks(w, name)
    qw = rtn(w, grid_for("gguf", bits, 32))
    np.testing.assert_array_equal(qw.q.numpy(), codes)
    np.testing.assert_array_equal(qw.scale.numpy(), d)
    np.testing.assert_array_equal(qw.dequantize().numpy(), deq)


def test_rounding_with_the_stored_scale_is_never_worse_than_ggmls():
    """ggml rounds with the float32 d, then stores fp16 d; the calibrated passes round with the stored one."""
    w = torch.randn(64, 512, generator=torch.Generator().manual_seed(7))
    grid = grid_for("gguf", 4, 32)
    ref = rtn(w, grid)
    ours = dequantize(quantize(w, ref.scale, None, grid), ref.scale, None, grid)
    assert bool(((w - ours).abs() <= (w - ref.dequantize()).abs()).all())
    assert not torch.equal(ours, ref.dequantize())  # the two do differ: this is not a vacuous check


# --- compressed-tensors (vLLM) -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_compressed_tensors_rtn_follows_its_formula(dtype):
    """compressed-tensors is not installed here: its calculate_qparams / _quantize written out plainly."""
    w = torch.randn(8, 256, generator=torch.Generator().manual_seed(2))
    qw = rtn(w, grid_for("compressed-tensors", 4, 128, scale_dtype=dtype))
    blocks = w.reshape(8, 2, 128)
    scale = (blocks.abs().amax(-1) / 7.5).clamp(min=torch.finfo(torch.float32).eps).to(dtype)
    codes = torch.clamp(torch.round(blocks / scale.float()[..., None]), -8, 7).reshape(8, 256)
    assert qw.scale.dtype == dtype and qw.q.dtype == torch.int8
    torch.testing.assert_close(qw.scale, scale, rtol=0, atol=0)
    torch.testing.assert_close(qw.q.float(), codes, rtol=0, atol=0)


# --- the grids themselves ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,message",
    [
        (("gguf", 4, 32, False), "asymmetric Q4_1 is not supported"),
        (("gguf", 4, 64, True), "block_size is 32"),
        (("gguf", 3, 32, True), "4 (Q4_0) or 8 (Q8_0)"),
        (("onnx", 4, 8, True), "(16, 32, 64, 128, 256)"),
        (("onnx", 2, 32, True), "4 or 8"),
        (("compressed-tensors", 4, 128, False), "symmetric only"),
        (("compressed-tensors", 4, 16, True), "(32, 64, 128)"),
        (("tflite", 4, 32, True), "tflite"),
    ],
)
def test_impossible_grids_are_refused(args, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        grid_for(*args)


def test_scale_dtype_and_partial_blocks_are_checked():
    with pytest.raises(ValueError, match="fp16 scales"):
        grid_for("gguf", 4, 32, True, torch.float32)
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        grid_for(Format.COMPRESSED_TENSORS, 4, 128, True, torch.float32)
    with pytest.raises(ValueError, match="not a multiple of 32"):
        rtn(torch.randn(4, 40), grid_for("gguf", 4, 32))
    assert rtn(torch.randn(4, 40), grid_for("onnx", 4, 32)).scale.shape == (4, 2)  # onnx pads


def test_quantized_weight_checks_shapes():
    grid = grid_for("onnx", 4, 32, True)
    with pytest.raises(ValueError, match="scale/zero must be"):
        QuantizedWeight(torch.zeros(4, 64, dtype=torch.uint8), torch.ones(4, 3), None, grid)
    with pytest.raises(ValueError, match="zero point is stored exactly when"):
        QuantizedWeight(torch.zeros(4, 64, dtype=torch.uint8), torch.ones(4, 2), torch.zeros(4, 2), grid)


@pytest.mark.parametrize("spec", GRIDS)
def test_codes_stay_on_the_grid(spec):
    grid = grid_for(*spec)
    w = torch.randn(16, 128, generator=torch.Generator().manual_seed(1))
    scale, zero = rtn_scales(w, grid)
    q = quantize(w * 50, scale, zero, grid)  # far outside the range: clamped
    assert q.dtype == grid.q_dtype
    assert int(q.min()) == grid.qmin and int(q.max()) == grid.qmax


@pytest.mark.parametrize("spec", GRIDS)
def test_nearest_codes_minimise_the_one_dimensional_quadratic(spec):
    """A coordinate step's rounding is the grid point nearest u: brute force over every code."""
    grid = grid_for(*spec)
    g = torch.Generator().manual_seed(4)
    scale = torch.randn(500, generator=g) * 0.1
    zero = torch.full((500,), float(grid.default_zero))
    u = torch.randn(500, generator=g) * (grid.qmax - grid.qmin) * 0.1
    chosen = (nearest_codes(u, 1.0 / scale, zero, grid) - zero) * scale
    every = (torch.arange(grid.qmin, grid.qmax + 1).float()[:, None] - zero) * scale
    best = (every - u).abs().min(0).values
    torch.testing.assert_close((chosen - u).abs(), best, rtol=1e-6, atol=1e-7)


# --- Hessian -------------------------------------------------------------------------------------


def test_hessian_accumulates_in_constant_memory_and_halves_equal_the_whole():
    x = torch.randn(2, 150, 24, generator=torch.Generator().manual_seed(0))
    whole, halves = HessianAccumulator(24), HessianAccumulator(24)
    whole.add(x)
    halves.add(x[0])
    halves.add(x[1, :70])
    halves.add(x[1, 70:])
    assert whole.n_samples == halves.n_samples == 300
    flat = x.reshape(-1, 24).double()
    torch.testing.assert_close(whole.hessian(), 2 * flat.T @ flat / 300, rtol=1e-12, atol=0)
    torch.testing.assert_close(halves.hessian(), whole.hessian(), rtol=1e-12, atol=0)
    assert halves._sum.shape == (24, 24)
    with pytest.raises(ValueError, match="no calibration samples"):
        HessianAccumulator(4).hessian()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_hessian_names_the_layer(bad):
    w, h = correlated_layer(0, out=8, cols=64)
    h[3, 5] = bad
    grid = grid_for("onnx", 4, 32, True)
    with pytest.raises(ValueError, match="model.layers.3.mlp.down_proj.*non-finite activations"):
        gptq(w, h, grid, name="model.layers.3.mlp.down_proj")
    with pytest.raises(ValueError, match="down_proj.*dead layer"):
        quantease(w, h, rtn(w, grid), name="down_proj")


# --- GPTQ ----------------------------------------------------------------------------------------


def gptq_reference(w, h, grid, percdamp=0.01, act_order=False, static=False):
    """Textbook GPTQ in float64: one column at a time, the whole rest of W updated after each."""
    w, h = w.double().clone(), h.double().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    g, cols = grid.block_size, w.shape[1]
    fixed = rtn_scales(w.float(), grid)
    perm = torch.argsort(h.diagonal(), descending=True) if act_order else torch.arange(cols)
    w, h = w[:, perm], h[perm][:, perm]
    h += percdamp * h.diagonal().mean() * torch.eye(cols, dtype=h.dtype)
    u = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)
    q = torch.zeros_like(w)
    for j in range(cols):
        if static or act_order:
            s, z = (
                fixed[0][:, perm[j] // g],
                grid.default_zero if fixed[1] is None else fixed[1][:, perm[j] // g],
            )
        elif j % g == 0:
            s, z = (t if t is None else t[:, 0] for t in rtn_scales(w[:, j : j + g].float(), grid))
            z = grid.default_zero if z is None else z
        s64, z64 = s.double(), torch.as_tensor(z).double()
        inv = (1.0 / s.float()).double()  # the formats multiply by fl32(1 / s)
        q[:, j] = torch.clamp(torch.round(w[:, j] * inv + z64), grid.qmin, grid.qmax)
        err = (w[:, j] - (q[:, j] - z64) * s64) / u[j, j]
        w[:, j:] -= err[:, None] * u[j, j:][None, :]
    return q[:, torch.argsort(perm)]


@pytest.mark.parametrize("spec", GRIDS)
def test_lazy_batched_columns_equal_the_one_at_a_time_reference(spec):
    """gptq_columns in float64 with batches of 64 gives exactly the codes of the plain loop."""
    grid = grid_for(*spec)
    w, h = correlated_layer(11, out=32, cols=256)
    hinv = upper_inverse_cholesky(h, 0.01, "t").double()
    h_damped = h.double() + 0.01 * h.diagonal().double().mean() * torch.eye(256, dtype=torch.float64)
    torch.testing.assert_close(
        hinv, torch.linalg.cholesky(torch.linalg.inv(h_damped), upper=True), rtol=0, atol=1e-4
    )
    hinv = torch.linalg.cholesky(torch.linalg.inv(h_damped), upper=True)
    params = GroupScales(32, 256, grid, torch.device("cpu"))
    codes = gptq_columns(w.double().T.contiguous(), hinv, grid, 64, params)
    torch.testing.assert_close(codes.T, gptq_reference(w, h, grid), rtol=0, atol=0)


@pytest.mark.parametrize("spec", GRIDS)
@pytest.mark.parametrize("act_order,static", [(False, False), (False, True), (True, False)])
def test_gptq_matches_the_reference(spec, act_order, static):
    grid = grid_for(*spec)
    w, h = correlated_layer(12, out=32, cols=256)
    h[7, :] = 0.0  # a dead input
    h[:, 7] = 0.0
    qw, stats = gptq(w, h, grid, act_order=act_order, static_groups=static)
    ref = gptq_reference(w, h, grid, act_order=act_order, static=static)
    same = (qw.q.float() == ref).float().mean()
    assert same > 0.99  # float32 and float64 part on the odd near-tie, then that row's updates differ
    ref_hat = dequantize(ref.to(grid.q_dtype), qw.scale, qw.zero, grid)
    assert abs(stats.objective - objective(w, ref_hat, h)) < 2e-3 * stats.objective
    assert stats.dead_columns == 1 and bool((qw.dequantize()[:, 7] == 0).all())


def test_gptq_scales_follow_the_documented_rule():
    grid = grid_for("gguf", 4, 32)
    w, h = correlated_layer(13, out=16, cols=128)
    fixed, _ = rtn_scales(w, grid)
    dynamic, _ = gptq(w, h, grid)
    torch.testing.assert_close(dynamic.scale[:, 0], fixed[:, 0], rtol=0, atol=0)  # nothing updated yet
    assert not torch.equal(dynamic.scale[:, 1:], fixed[:, 1:])  # from the updated weights
    for kwargs in ({"static_groups": True}, {"act_order": True}):
        qw, _ = gptq(w, h, grid, **kwargs)
        torch.testing.assert_close(qw.scale, fixed, rtol=0, atol=0)


@pytest.mark.parametrize("spec", GRIDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gptq_and_quantease_beat_rtn_and_quantease_never_rises(spec, seed):
    grid = grid_for(*spec)
    w, h = correlated_layer(seed)
    f_rtn = objective(w, rtn(w, grid).dequantize(), h)
    qg, stats = gptq(w, h, grid)
    assert stats.objective <= f_rtn and stats.rtn_objective == pytest.approx(f_rtn, rel=1e-5)
    for init, ceiling in ((qg, stats.objective), (rtn(w, grid), f_rtn)):
        qe, qs = quantease(w, h, init, passes=4)
        f = qs.objectives
        assert f[0] == pytest.approx(ceiling, rel=1e-5)
        assert all(b <= a * (1 + 1e-6) for a, b in zip(f, f[1:])), f
        assert f[-1] < ceiling  # it does descend
        assert objective(w, qe.dequantize(), h) == pytest.approx(f[-1], rel=1e-5)
        assert int(qe.q.min()) >= grid.qmin and int(qe.q.max()) <= grid.qmax
        torch.testing.assert_close(qe.scale, init.scale, rtol=0, atol=0)  # scales held fixed
    assert f[-1] <= f_rtn


def quantease_reference(w, h, init, passes):
    """Plain coordinate descent in float64: u recomputed from the whole residual for every column."""
    grid, cols = init.grid, w.shape[1]
    w, h, w_hat = w.double(), h.double(), init.dequantize().double()
    s = per_column(init.scale.double(), grid, cols)
    z = grid.default_zero if init.zero is None else per_column(init.zero.double(), grid, cols)
    z = torch.as_tensor(z, dtype=torch.float64).expand_as(w)
    inv = (1.0 / s.float()).double()
    q = init.q.double()
    for _ in range(passes):
        for j in range(cols):
            u = w_hat[:, j] + ((w - w_hat) @ h[:, j]) / h[j, j]
            q[:, j] = torch.clamp(torch.round(u * inv[:, j] + z[:, j]), grid.qmin, grid.qmax)
            w_hat[:, j] = (q[:, j] - z[:, j]) * s[:, j]
    return q


@pytest.mark.parametrize("spec", GRIDS)
def test_quantease_equals_plain_coordinate_descent(spec):
    grid = grid_for(*spec)
    w, h = correlated_layer(31, out=32, cols=160)
    init = rtn(w, grid)
    qe, _ = quantease(w, h, init, passes=2, batch_columns=64)
    same = (qe.q.double() == quantease_reference(w, h, init, 2)).all(1)
    assert same.float().mean() >= 0.95  # a row may part on a float32 near-tie; rows are independent


def test_quantease_converges_to_a_coordinatewise_minimum():
    """At the fixed point no single weight can move to another grid point and lower f."""
    grid = grid_for("onnx", 4, 32, False)
    w, h = correlated_layer(32, out=16, cols=64)
    qe, stats = quantease(w, h, rtn(w, grid), passes=60)
    assert stats.objectives[-1] == stats.objectives[-2]  # converged
    w_hat = qe.dequantize().double()
    u = w_hat + ((w.double() - w_hat) @ h.double()) / h.double().diagonal()
    s = per_column(qe.scale.double(), grid, 64)
    z = per_column(qe.zero.double(), grid, 64)
    every = (torch.arange(grid.qmin, grid.qmax + 1).double()[:, None, None] - z) * s
    best = (every - u).abs().min(0).values
    assert bool(((w_hat - u).abs() <= best + 1e-6 * s.abs()).all())


def test_quantease_from_gptq_ends_below_gptq_on_every_layer():
    for seed in range(3):
        for spec in GRIDS:
            grid = grid_for(*spec)
            w, h = correlated_layer(100 + seed, out=16, cols=96)
            qg, stats = gptq(w, h, grid, act_order=seed % 2 == 1)
            _, qs = quantease(w, h, qg, passes=3)
            assert qs.objectives[-1] <= stats.objective * (1 + 1e-6), (spec, seed)


@pytest.mark.parametrize(
    "spec", [("onnx", 4, 32, True), ("gguf", 4, 32, True), ("compressed-tensors", 4, 64, True)]
)
def test_quantease_scale_refit_never_rises_and_stays_on_the_stored_dtype(spec):
    grid = grid_for(*spec)
    w, h = correlated_layer(21)
    qg, _ = gptq(w, h, grid)
    _, plain = quantease(w, h, qg, passes=3)
    qe, refit = quantease(w, h, qg, passes=3, refit_scales=True)
    f = refit.objectives
    assert all(b <= a * (1 + 1e-6) for a, b in zip(f, f[1:])), f
    assert f[-1] < plain.objectives[-1]
    assert qe.scale.dtype == grid.scale_dtype and not torch.equal(qe.scale, qg.scale)
    assert objective(w, qe.dequantize(), h) == pytest.approx(f[-1], rel=1e-5)


def test_quantease_damping_descends_the_damped_objective_and_stays_nearer_w():
    grid = grid_for("onnx", 4, 32, True)
    w, h = correlated_layer(23)
    init = rtn(w, grid)
    plain, _ = quantease(w, h, init, passes=3)
    damped, stats = quantease(w, h, init, passes=3, percdamp=0.5)
    h_damped = h + 0.5 * h.diagonal().mean() * torch.eye(h.shape[0])
    f = stats.objectives
    assert all(b <= a * (1 + 1e-6) for a, b in zip(f, f[1:])), f
    assert f[-1] == pytest.approx(objective(w, damped.dequantize(), h_damped), rel=1e-5)
    assert (w - damped.dequantize()).norm() < (w - plain.dequantize()).norm()


def test_quantease_refit_leaves_the_last_block_at_its_best_stored_scale():
    """After one refit sweep the last block's fp16 scale cannot move one fp16 step and lower f."""
    grid = grid_for("gguf", 4, 32)
    w, h = correlated_layer(22, out=32, cols=128)
    qe, _ = quantease(w, h, rtn(w, grid), passes=1, refit_scales=True)
    w_hat, h64 = qe.dequantize().double(), h.double()
    p = (w.double() - w_hat) @ h64[:, 96:]  # [out, 32]
    v = qe.q[:, 96:].double() - grid.default_zero
    s = qe.scale[:, 3]
    for toward in (float("inf"), float("-inf")):
        ds = torch.nextafter(s, torch.full_like(s, toward)).double() - s.double()
        df = -2 * ds * (v * p).sum(1) + ds**2 * ((v @ h64[96:, 96:]) * v).sum(1)
        assert bool((df >= -1e-9 * objective(w, w_hat, h)).all())


def test_quantease_skips_dead_inputs_and_checks_shapes():
    grid = grid_for("onnx", 8, 32, True)
    w, h = correlated_layer(3, out=8, cols=64)
    h[:, 10] = 0.0
    h[10, :] = 0.0
    init = rtn(w, grid)
    qe, _ = quantease(w, h, init, passes=2)
    assert torch.equal(qe.q[:, 10], init.q[:, 10])
    with pytest.raises(ValueError, match="initial codes are"):
        quantease(w[:, :32], h[:32, :32], init)
