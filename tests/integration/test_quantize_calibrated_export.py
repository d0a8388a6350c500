"""Calibrated 4-bit weights written into the ONNX graph and the GGUF file, read back bit-exactly."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/export_helpers.py

from export_helpers import save_small_bpe_tokenizer, save_tiny_model

from slmkit.errors import InputError
from slmkit.quantize.calibrate import Calibrator, calibrate, calibration_blocks, method_of
from slmkit.quantize.config import CalibrationConfig, GgufOptions, OnnxOptions
from slmkit.quantize.gguf_writer import _permute_codes, write_gguf
from slmkit.quantize.grids import grid_for, rtn
from slmkit.quantize.onnx_genai import build_onnx, matmul_nbits, node_grid, read_matmul_weights
from slmkit.quantize.packing import gguf_unpack

pytestmark = pytest.mark.filterwarnings("ignore")
CAL = {"method": "quantease", "samples": 12, "seq_len": 32, "passes": 2, "batch_size": 4}


class Recording(Calibrator):
    """A calibrator on fixed token streams that keeps the codes it handed to the writer."""

    def __init__(self, work: Path, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        streams = [torch.randint(3, 384, (200,), generator=g).tolist() for _ in range(3)]
        super().__init__(lambda: streams, work, lambda _: None)
        self.codes = None

    def run(self, model_dir, targets, cfg, tag):
        self.codes, summary = super().run(model_dir, targets, cfg, tag)
        return self.codes, summary


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    tok = save_small_bpe_tokenizer(tmp_path_factory.mktemp("tok"))
    return save_tiny_model(tmp_path_factory.mktemp("llama"), tok, "llama")


def _modules(model_dir: Path) -> tuple[set[str], dict[str, torch.Tensor]]:
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir)
    linears = {n: x.weight.data for n, x in m.named_modules() if isinstance(x, torch.nn.Linear)}
    return {n for n, _ in m.named_modules()}, linears


def test_our_rtn_is_the_builders_int4_bit_for_bit(tmp_path, llama_dir):
    build_onnx(llama_dir, tmp_path / "onnx", OnnxOptions(precision="int4", block_size=32), tmp_path / "cache")
    modules, weights = _modules(llama_dir)
    nodes = matmul_nbits(tmp_path / "onnx", modules)
    assert [n["modules"] for n in nodes][0] == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
                                              "model.layers.0.self_attn.v_proj"]  # the builder fuses q, k, v
    written = read_matmul_weights(tmp_path / "onnx", nodes)
    for n in nodes:
        ours = rtn(torch.cat([weights[m] for m in n["modules"]]), node_grid(n))
        assert torch.equal(written[n["node"]].q, ours.q) and torch.equal(written[n["node"]].scale, ours.scale)


@pytest.mark.parametrize("algo", ["default", "k_quant_mixed"])  # k_quant_mixed: int8 nodes, zero points
def test_calibrated_onnx_holds_exactly_the_quantizers_codes_and_runs(tmp_path, llama_dir, algo):
    cal = Recording(tmp_path / "work")
    opts = OnnxOptions(precision="int4", block_size=32, accuracy_level=1, calibration=CAL, algo=algo)
    details = build_onnx(llama_dir, tmp_path / "onnx", opts, tmp_path / "cache", cal)
    summary = details["calibration"]
    assert summary["nodes_replaced"] == 2 * 5 + 1 and summary["mean_objective_vs_rtn"] < 1.0
    modules, weights = _modules(llama_dir)
    nodes = matmul_nbits(tmp_path / "onnx", modules)
    written = read_matmul_weights(tmp_path / "onnx", nodes)
    for n in nodes:
        want = torch.cat([cal.codes[m].dequantize() for m in n["modules"]])
        assert torch.equal(written[n["node"]].dequantize(), want), n["node"]
    # the replaced weights take the place of the builder's: the external data holds each tensor once
    import onnx

    graph = onnx.load(str(tmp_path / "onnx" / "model.onnx"), load_external_data=True)
    held = sum(len(i.raw_data) for i in graph.graph.initializer)
    assert (tmp_path / "onnx" / "model.onnx.data").stat().st_size <= held
    # the runtime multiplies by exactly those weights: with fp32 activations (accuracy_level 1) its
    # logits are the fake-quantized PyTorch model's
    from transformers import AutoModelForCausalLM

    from slmkit.runtimes.onnx_genai import OgLM

    fake = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    for name, mod in fake.named_modules():
        if name in cal.codes:
            mod.weight.data.copy_(cal.codes[name].dequantize())
    seq = list(range(5, 45))
    with torch.no_grad():
        ref = fake(torch.tensor([seq])).logits[0]
    got = OgLM(tmp_path / "onnx").logits([seq])[0]
    assert torch.allclose(got, ref, atol=2e-3), (got - ref).abs().max()


def test_calibrated_gguf_blocks_dequantize_to_the_quantizers_values(tmp_path, llama_dir):
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize

    cal = Recording(tmp_path / "work")
    out = tmp_path / "m.gguf"
    details = write_gguf(llama_dir, out, GgufOptions(type="Q4_0", tokenizer_pre="gpt-2", calibration=CAL), cal)
    assert details["calibration"]["linears"] == 2 * 7 and details["calibration"]["mean_objective_vs_rtn"] < 1.0
    tensors = {t.name: t for t in GGUFReader(out).tensors}
    grid = grid_for("gguf", 4, 32)
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "mlp.down_proj": "ffn_down"}
    for layer in (0, 1):
        for hf, gg in names.items():
            qw = cal.codes[f"model.layers.{layer}.{hf}"]
            heads = {"attn_q": 4, "attn_k": 2}.get(gg, 0)
            want = _permute_codes(qw, heads)  # llama.cpp's rotary layout moves whole rows
            t = tensors[f"blk.{layer}.{gg}.weight"]
            assert t.tensor_type == GGMLQuantizationType.Q4_0
            back = gguf_unpack(np.asarray(t.data), grid, qw.q.shape[1])
            assert torch.equal(back.q, want.q) and torch.equal(back.scale, want.scale)
            values = dequantize(np.asarray(t.data), GGMLQuantizationType.Q4_0).reshape(want.q.shape)
            np.testing.assert_array_equal(values, want.dequantize().numpy())


def test_sequential_calibration_resumes_from_its_work_dir(tmp_path, llama_dir):
    from transformers import AutoModelForCausalLM

    blocks = calibration_blocks([list(range(3, 380))], 8, 32)
    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    targets = {n: grid_for("onnx", 4, 32) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    method = method_of(CalibrationConfig(**CAL))
    first, reports = calibrate(model, blocks, targets, method, tmp_path / "w", batch=4)
    assert all(r.objective <= r.objective_rtn for r in reports)
    assert all(b <= a + 1e-9 for r in reports for a, b in zip(r.objectives, r.objectives[1:]))  # never rises
    (tmp_path / "w" / "layer-001.safetensors").unlink()  # as if the run died in the second layer
    again, _ = calibrate(AutoModelForCausalLM.from_pretrained(llama_dir), blocks, targets, method, tmp_path / "w",
                         batch=4)
    assert all(torch.equal(first[k].q, again[k].q) and torch.equal(first[k].scale, again[k].scale) for k in first)


def test_calibration_without_tokens_is_a_clear_input_error(tmp_path, llama_dir):
    cal = Calibrator(lambda: [[], []], tmp_path / "w", lambda _: None)
    with pytest.raises(InputError, match="holds no tokens"):
        build_onnx(llama_dir, tmp_path / "onnx", OnnxOptions(calibration=CAL), tmp_path / "cache", cal)
    with pytest.raises(InputError, match="fewer than one block"):
        calibration_blocks([[1, 2, 3]], 4, 32)


def test_calibration_options_refuse_what_the_format_cannot_hold():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="writes Q4_0 or Q8_0"):
        GgufOptions(type="F16", calibration="gptq")
    assert OnnxOptions(algo="k_quant_mixed", calibration="quantease").calibration.method == "quantease"  # its layout
    with pytest.raises(ValidationError, match="precision fp32 has none"):
        OnnxOptions(precision="fp32", calibration="gptq")
    with pytest.raises(ValueError, match="block"):
        grid_for("gguf", 4, 64)
