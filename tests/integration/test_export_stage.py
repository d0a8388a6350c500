"""The export and quantize stages end to end on a tiny model: files, manifest details, failures."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/export_helpers.py

from export_helpers import save_small_bpe_tokenizer, save_tiny_model, stage_context

from slmkit.errors import InputError
from slmkit.export import stage as export_stage
from slmkit.export.config import ExportConfig
from slmkit.quantize import stage as quantize_stage
from slmkit.quantize.config import QuantizeConfig
from slmkit.runtimes.verify import VerificationFailed

pytestmark = pytest.mark.filterwarnings("ignore")
VERIFY = {"new_tokens": 6, "prompts": ["The capital of France is", "def fibonacci(n):"]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = save_small_bpe_tokenizer(tmp_path_factory.mktemp("tok"))
    return save_tiny_model(tmp_path_factory.mktemp("llama"), tok, "llama")


def quantize_config(**raw):
    from pydantic import TypeAdapter

    return TypeAdapter(QuantizeConfig).validate_python({**raw, "verify": VERIFY})


def test_export_writes_and_verifies_all_formats(tmp_path, model_dir):
    cfg = ExportConfig(gguf={"type": "Q4_0", "tokenizer_pre": "gpt-2"}, verify=VERIFY)
    ctx = stage_context(tmp_path, model_dir, cfg, "export")
    out = export_stage.run(ctx)
    formats = out.details["formats"]
    assert set(formats) == {"hf", "onnx", "gguf"}
    assert (ctx.out_dir / "hf" / "model.safetensors").is_file()
    assert (ctx.out_dir / "hf" / "generation_config.json").is_file()
    assert formats["hf"]["chat_template"] is True
    assert (ctx.out_dir / "onnx" / "genai_config.json").is_file()
    assert (ctx.out_dir / formats["gguf"]["path"]).is_file()
    assert out.metrics["hf_max_abs_logit_diff"] == 0.0 and out.metrics["hf_top1_agreement"] == 1.0
    assert out.metrics["onnx_top1_agreement"] >= 0.9 and out.metrics["gguf_top1_agreement"] >= 0.9
    assert all(d["verification"]["passed"] for d in formats.values())
    notes = "\n".join(out.model_card_notes)
    assert "llama-cli -m gguf/model-Q4_0.gguf" in notes and 'og.Model("onnx")' in notes


def test_failing_verification_raises_and_warn_mode_reports(tmp_path, model_dir):
    # fp32 ONNX differs from PyTorch by ~1e-6: a 1e-12 tolerance must fail
    strict = {**VERIFY, "max_abs_diff_fp32": 1e-12}
    cfg = ExportConfig(formats=["onnx"], onnx={"precision": "fp32"}, verify=strict)
    with pytest.raises(VerificationFailed, match="max \\|logit diff\\|"):
        export_stage.run(stage_context(tmp_path / "a", model_dir, cfg, "export"))
    cfg = ExportConfig(formats=["onnx"], onnx={"precision": "fp32"}, verify={**strict, "mode": "warn"})
    ctx = stage_context(tmp_path / "b", model_dir, cfg, "export")
    out = export_stage.run(ctx)
    assert out.details["formats"]["onnx"]["verification"]["passed"] is False
    assert any("max |logit diff|" in w for w in ctx.reporter.warnings)


def test_quantize_gguf_records_bits_sizes_and_verification(tmp_path, model_dir):
    ctx = stage_context(tmp_path, model_dir, quantize_config(method="gguf", type="Q8_0", tokenizer_pre="gpt-2"), "quantize")
    out = quantize_stage.run(ctx)
    assert out.artifact_type == "gguf"
    assert out.details["bits"] == 8 and out.details["block_size"] == 32
    assert out.details["size_before_bytes"] > out.details["size_after_bytes"] > 0
    assert out.metrics["top1_agreement"] >= 0.9


def test_quantize_onnx_int4(tmp_path, model_dir):
    ctx = stage_context(tmp_path, model_dir, quantize_config(method="onnx", precision="int4", block_size=32), "quantize")
    out = quantize_stage.run(ctx)
    assert out.artifact_type == "onnx" and out.details["bits"] == 4 and out.details["block_size"] == 32
    assert (ctx.out_dir / "onnx" / "genai_config.json").is_file()
    assert out.metrics["top1_agreement"] >= 0.9


def test_quantize_torchao_int8_reloads_in_transformers(tmp_path, model_dir):
    pytest.importorskip("torchao")
    ctx = stage_context(tmp_path, model_dir, quantize_config(method="torchao", scheme="int8_weight_only"), "quantize")
    out = quantize_stage.run(ctx)
    assert out.details["bits"] == 8 and out.metrics["top1_agreement"] >= 0.9
    assert (ctx.out_dir / "model.safetensors").is_file()


def test_torchao_int4_on_cpu_names_the_alternatives(tmp_path, model_dir):
    pytest.importorskip("torchao")
    import torch

    if torch.cuda.is_available():
        pytest.skip("int4 runs on a GPU machine")
    ctx = stage_context(tmp_path, model_dir, quantize_config(method="torchao", scheme="int4_weight_only"), "quantize")
    with pytest.raises(InputError, match="CUDA GPU.*int8_weight_only"):
        quantize_stage.run(ctx)
    assert list(ctx.out_dir.iterdir()) == []


def test_llmcompressor_without_the_extra_names_it(tmp_path, model_dir):
    import importlib.util

    if importlib.util.find_spec("llmcompressor") is not None:
        pytest.skip("llmcompressor is installed: the GPU test covers it")
    ctx = stage_context(tmp_path, model_dir, quantize_config(method="llmcompressor", scheme="FP8_DYNAMIC"), "quantize")
    with pytest.raises(InputError, match=r"pip install 'slmkit\[gpu\]'"):
        quantize_stage.run(ctx)
    assert list(ctx.out_dir.iterdir()) == []
