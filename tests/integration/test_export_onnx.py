"""ONNX GenAI export: int4 / int8 / fp32 graphs built, run in onnxruntime-genai and verified."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/export_helpers.py

from export_helpers import save_small_bpe_tokenizer, save_tiny_model

from slmkit.errors import InputError
from slmkit.quantize.config import OnnxOptions
from slmkit.quantize.onnx_genai import build_onnx
from slmkit.runtimes.config import VerifyConfig
from slmkit.runtimes.onnx_genai import card_notes as onnx_notes
from slmkit.runtimes.verify import VerificationFailed, reference_logits, verify_artifact

pytestmark = pytest.mark.filterwarnings("ignore")
CFG = VerifyConfig(new_tokens=8)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return save_small_bpe_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def llama(tmp_path_factory, tokenizer_dir):
    model_dir = save_tiny_model(tmp_path_factory.mktemp("llama"), tokenizer_dir, "llama")
    return model_dir, reference_logits(model_dir, CFG)


@pytest.mark.parametrize("precision,kind", [("fp32", "fp32"), ("int8", "quantized"), ("int4", "quantized")])
def test_onnx_precisions_verify_in_onnxruntime_genai(tmp_path, llama, precision, kind):
    model_dir, ref = llama
    out = tmp_path / "onnx"
    details = build_onnx(model_dir, out, OnnxOptions(precision=precision), tmp_path / "cache")
    assert (out / "genai_config.json").is_file() and details["precision"] == precision
    result = verify_artifact("onnx", out, ref, kind, CFG)
    assert result["runtime"] == "onnxruntime-genai" and result["passed"]
    if precision == "fp32":
        assert result["top1_agreement"] == 1.0 and result["max_abs_logit_diff"] < 1e-4
    else:
        assert result["top1_agreement"] >= 0.9


@pytest.mark.parametrize("arch", ["mistral", "qwen2", "qwen3"])
def test_int4_other_architectures(tmp_path, tokenizer_dir, arch):
    model_dir = save_tiny_model(tmp_path / "m", tokenizer_dir, arch)
    build_onnx(model_dir, tmp_path / "onnx", OnnxOptions(precision="int4"), tmp_path / "cache")
    result = verify_artifact("onnx", tmp_path / "onnx", reference_logits(model_dir, CFG), "quantized", CFG)
    assert result["top1_agreement"] >= 0.9


def test_truncated_weights_fail_verification(tmp_path, llama):
    model_dir, ref = llama
    out = tmp_path / "onnx"
    build_onnx(model_dir, out, OnnxOptions(precision="fp32"), tmp_path / "cache")
    data = out / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(VerificationFailed, match="truncated"):
        verify_artifact("onnx", out, ref, "fp32", CFG)


def test_unsupported_architecture_is_refused(tmp_path, llama):
    model_dir, _ = llama
    bad = tmp_path / "gpt2"
    bad.mkdir()
    config = json.loads((model_dir / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(InputError, match="not a causal language model"):
        build_onnx(bad, tmp_path / "onnx", OnnxOptions(), tmp_path / "cache")
    (bad / "config.json").write_text(json.dumps({**config, "architectures": ["FalconForCausalLM"]}))
    with pytest.raises(InputError, match="FalconForCausalLM cannot be exported .* it builds: .*LlamaForCausalLM"):
        build_onnx(bad, tmp_path / "onnx", OnnxOptions(), tmp_path / "cache")
    assert not (tmp_path / "onnx").exists()


def test_the_builder_is_asked_which_architectures_it_builds():
    from slmkit.quantize.onnx_genai import builder_architectures

    archs = builder_architectures()  # read from the installed builder's own dispatch
    assert {"LlamaForCausalLM", "Qwen3ForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM",
            "GraniteForCausalLM"} <= archs
    assert "GPT2LMHeadModel" not in archs and all(a.endswith("ForCausalLM") for a in archs)


def test_model_card_snippet_runs_without_slmkit(tmp_path, llama):
    """The exact Python the model card shows, run in a fresh interpreter that cannot import slmkit."""
    model_dir, _ = llama
    build_onnx(model_dir, tmp_path / "onnx", OnnxOptions(precision="int4"), tmp_path / "cache")
    code = onnx_notes("onnx").split("```python\n")[1].split("```")[0].replace("max_length=256", "max_length=48")
    guard = "import sys; sys.modules['slmkit'] = None\n"  # importing slmkit would now fail
    proc = subprocess.run([sys.executable, "-c", guard + code], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("user\nHello!\nassistant")  # the chat template applied, then decoded


def test_int8_lm_head_on_tied_embeddings_gathers_the_embedding_from_its_blocks(tmp_path, llama, caplog):
    """The builder ties an embedding only to int4 blocks (an 8-bit lm_head broke that graph): the
    export ties it to the 8-bit blocks itself, with no float copy of the matrix left in the file."""
    import onnx
    from onnx import numpy_helper

    model_dir, ref = llama
    config = json.loads((model_dir / "config.json").read_text())
    assert config["tie_word_embeddings"]
    out = tmp_path / "onnx"
    build_onnx(model_dir, out, OnnxOptions(precision="int4", mixed_precision=["last_matmul:int8"]), tmp_path / "cache")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no ERROR line for a skipped Gather
    model = onnx.load(out / "model.onnx")
    nodes = {n.name: n for n in model.graph.node}
    bits = {name: next((a.i for a in n.attribute if a.name == "bits"), 4)  # the operators' default
            for name, n in nodes.items() if n.op_type in ("MatMulNBits", "GatherBlockQuantized")}
    assert [b for name, b in bits.items() if name.startswith("/lm_head/")] == [8]
    assert [b for name, b in bits.items() if name.startswith("/model/embed_tokens/")] == [8]
    assert all(b == 4 for name, b in bits.items() if "/layers." in name)
    gathered = nodes["/model/embed_tokens/GatherBlockQuantized"]
    assert nodes["/model/embed_tokens/ReshapeCodes"].input[0] == nodes["/lm_head/MatMul_Q8"].input[1]
    vocab, hidden = config["vocab_size"], config["hidden_size"]
    floats = [i.name for i in model.graph.initializer if list(i.dims) == [vocab, hidden]
              and numpy_helper.to_array(i).dtype.kind == "f"]
    assert gathered.input[1] == "input_ids" and floats == []
    # rewritten by onnx, which creates external data owner-only: readable as the graph file is
    assert (out / "model.onnx.data").stat().st_mode & 0o777 == (out / "model.onnx").stat().st_mode & 0o777
    result = verify_artifact("onnx", out, ref, "quantized", CFG)
    assert result["passed"] and result["top1_agreement"] >= 0.9
