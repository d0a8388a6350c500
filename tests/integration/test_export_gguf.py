"""GGUF writer: each architecture writes, loads back in its runtime, verifies; bad input fails cleanly."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/export_helpers.py

from export_helpers import save_small_bpe_tokenizer, save_smollm2_tokenizer, save_tiny_model

from slmkit.errors import InputError
from slmkit.quantize.config import GgufOptions
from slmkit.quantize.gguf_writer import write_gguf
from slmkit.runtimes.config import VerifyConfig
from slmkit.runtimes.verify import VerificationFailed, reference_logits, verify_artifact

pytestmark = pytest.mark.filterwarnings("ignore")
# the trained test tokenizer has GPT-2's byte-level pre-tokenizer but its own vocabulary
OPTS = {"tokenizer_pre": "gpt-2"}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return save_small_bpe_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, tokenizer_dir):
    return save_tiny_model(tmp_path_factory.mktemp("llama"), tokenizer_dir, "llama")


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "qwen3"])
def test_q8_gguf_loads_and_verifies_per_architecture(tmp_path, tokenizer_dir, arch):
    model_dir = save_tiny_model(tmp_path / "m", tokenizer_dir, arch)
    out = tmp_path / "model-Q8_0.gguf"
    details = write_gguf(model_dir, out, GgufOptions(type="Q8_0", **OPTS))
    assert details["tensor_types"]["Q8_0"] > 0 and details["bits"] == 8
    cfg = VerifyConfig(new_tokens=8)
    result = verify_artifact("gguf", out, reference_logits(model_dir, cfg), "quantized", cfg)
    assert result["passed"] and result["top1_agreement"] >= 0.9


def test_f16_gguf_logits_match_source(tmp_path, llama_dir):
    out = tmp_path / "model-F16.gguf"
    write_gguf(llama_dir, out, GgufOptions(type="F16", **OPTS))
    cfg = VerifyConfig(new_tokens=8)
    result = verify_artifact("gguf", out, reference_logits(llama_dir, cfg), "fp16", cfg)
    assert result["top1_agreement"] == 1.0
    assert result["max_abs_logit_diff"] < 5e-3  # fp16 weights of a hidden-64 model


def test_metadata_matches_source_with_the_real_smollm2_tokenizer(tmp_path):
    from gguf import GGUFReader

    model_dir = save_tiny_model(tmp_path / "m", save_smollm2_tokenizer(tmp_path / "tok"), "llama")
    out = tmp_path / "model-Q4_0.gguf"
    details = write_gguf(model_dir, out, GgufOptions(type="Q4_0"))
    assert details["tokenizer_pre"] == "smollm"  # detected like llama.cpp's converter does
    config = json.loads((model_dir / "config.json").read_text())
    fields = GGUFReader(out).fields
    value = lambda k: fields[k].contents()
    assert value("general.architecture") == "llama"
    assert value("llama.block_count") == config["num_hidden_layers"]
    assert value("llama.context_length") == config["max_position_embeddings"]
    assert value("llama.embedding_length") == config["hidden_size"]
    assert value("llama.vocab_size") == config["vocab_size"] == 49152
    assert len(fields["tokenizer.ggml.tokens"].data) == 49152
    assert len(fields["tokenizer.ggml.merges"].data) > 40000
    assert value("tokenizer.ggml.eos_token_id") == config["eos_token_id"]
    assert "<|im_start|>" in value("tokenizer.chat_template")
    assert value("general.file_type") == 2  # MOSTLY_Q4_0


def test_truncated_gguf_fails_verification(tmp_path, llama_dir):
    out = tmp_path / "model-Q8_0.gguf"
    write_gguf(llama_dir, out, GgufOptions(type="Q8_0", **OPTS))
    data = out.read_bytes()
    out.write_bytes(data[: len(data) - 4096])
    cfg = VerifyConfig(new_tokens=4)
    with pytest.raises(VerificationFailed, match="truncated|not a readable"):
        verify_artifact("gguf", out, reference_logits(llama_dir, cfg), "quantized", cfg)


def test_unsupported_architecture_lists_the_supported_ones(tmp_path, llama_dir):
    model_dir = tmp_path / "phi"
    model_dir.mkdir()
    config = json.loads((llama_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "architectures": ["Phi3ForCausalLM"]}))
    with pytest.raises(InputError, match="LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM"):
        write_gguf(model_dir, tmp_path / "x.gguf", GgufOptions(**OPTS))
    assert not (tmp_path / "x.gguf").exists()


def test_not_a_causal_lm_is_refused(tmp_path, llama_dir):
    model_dir = tmp_path / "cls"
    model_dir.mkdir()
    config = json.loads((llama_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaForSequenceClassification"]}))
    with pytest.raises(InputError, match="not a causal language model"):
        write_gguf(model_dir, tmp_path / "x.gguf", GgufOptions(**OPTS))


def test_unknown_pre_tokenizer_asks_for_tokenizer_pre(tmp_path, llama_dir):
    with pytest.raises(InputError, match="gguf.tokenizer_pre"):
        write_gguf(llama_dir, tmp_path / "x.gguf", GgufOptions(type="Q8_0"))


_DISK_FULL_SCRIPT = """
import resource, signal, sys
from pathlib import Path
from slmkit.errors import SlmkitError
from slmkit.quantize.config import GgufOptions
from slmkit.quantize.gguf_writer import write_gguf
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # get EFBIG instead of being killed
resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))   # any file past 16 KiB: 'disk full'
try:
    write_gguf(Path(sys.argv[1]), Path(sys.argv[2]), GgufOptions(type="Q8_0", tokenizer_pre="gpt-2"))
except SlmkitError as e:
    print("SLMKIT-ERROR", e)
"""


def test_full_disk_while_writing_gives_a_clear_error_and_no_file(tmp_path, llama_dir):
    out = tmp_path / "model-Q8_0.gguf"
    proc = subprocess.run(
        [sys.executable, "-c", _DISK_FULL_SCRIPT, str(llama_dir), str(out)],
        capture_output=True, text=True, timeout=120, check=False, cwd=Path(__file__).resolve().parents[2],
    )
    assert "SLMKIT-ERROR" in proc.stdout, proc.stderr[-2000:]
    assert "disk filled up" in proc.stdout
    assert not out.exists()
