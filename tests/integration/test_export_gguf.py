"""GGUF writer: each architecture writes, loads back in its runtime, verifies; bad input fails cleanly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    model_dir = tmp_path / "stablelm"
    model_dir.mkdir()
    config = json.loads((llama_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "architectures": ["StableLmForCausalLM"]}))
    with pytest.raises(InputError, match="Gemma3ForCausalLM, GemmaForCausalLM, LlamaForCausalLM, MistralForCausalLM, "
                       "Phi3ForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM"):
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


# --- SentencePiece vocabularies and the Gemma 1/2/3 and Phi-3 graphs (tests/gguf_helpers.py)

SPM_ARCHS = {"llama": "llama", "phi3": "llama", "gemma": "gemma", "gemma2": "gemma", "gemma3_text": "gemma"}
HF_GGUF_LOADER = ("llama", "phi3", "gemma2", "gemma3_text")  # transformers' GGUF loader has no gemma (1)


@pytest.fixture(scope="module")
def spm_tokenizers(tmp_path_factory):
    from gguf_helpers import save_spm_tokenizer

    return {style: save_spm_tokenizer(tmp_path_factory.mktemp(f"spm-{style}"), style) for style in ("llama", "gemma")}


@pytest.fixture(scope="module")
def spm_models(tmp_path_factory, spm_tokenizers):
    from gguf_helpers import save_tiny_model

    root = tmp_path_factory.mktemp("spm-models")
    return {a: save_tiny_model(root / a, spm_tokenizers[style], a) for a, style in SPM_ARCHS.items()}


def _field(reader, key):
    return reader.fields[key].contents()


@pytest.mark.parametrize("gguf_type", ["F32", "Q8_0"])
@pytest.mark.parametrize("arch", HF_GGUF_LOADER)
def test_sentencepiece_architectures_verify_in_the_gguf_loader(tmp_path, spm_models, arch, gguf_type):
    out = tmp_path / f"model-{gguf_type}.gguf"
    details = write_gguf(spm_models[arch], out, GgufOptions(type=gguf_type))
    assert details["tokenizer_pre"] == "default"
    cfg = VerifyConfig(new_tokens=8, max_abs_diff_fp32=5e-3)  # llama.cpp keeps its KV cache in F16
    precision = "fp32" if gguf_type == "F32" else "quantized"
    result = verify_artifact("gguf", out, reference_logits(spm_models[arch], cfg), precision, cfg)
    assert result["passed"], result
    if gguf_type == "F32":
        # transformers' loader reads F32 weights exactly; llama.cpp's F16 KV cache may flip a near-tie
        # of these random tiny models
        assert result["top1_agreement"] >= (0.95 if result["runtime"] == "llama-cpp-python" else 1.0), result


def test_gemma_files_hold_llama_cpp_s_keys_and_norms(tmp_path, spm_models):
    from gguf import GGUFReader, TokenType
    from safetensors.torch import load_file

    for arch, name in (("gemma", "gemma"), ("gemma2", "gemma2"), ("gemma3_text", "gemma3")):
        out = tmp_path / f"{arch}.gguf"
        write_gguf(spm_models[arch], out, GgufOptions(type="F32"))
        reader = GGUFReader(out)
        assert _field(reader, "general.architecture") == name
        assert _field(reader, "tokenizer.ggml.model") == "llama"
        assert _field(reader, "tokenizer.ggml.add_space_prefix") is False  # Gemma prepends no space
        tokens, types = _field(reader, "tokenizer.ggml.tokens"), _field(reader, "tokenizer.ggml.token_type")
        assert types[tokens.index("<0x41>")] == TokenType.BYTE and types[tokens.index("<bos>")] == TokenType.CONTROL
        assert len(_field(reader, "tokenizer.ggml.scores")) == len(tokens)
        tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
        assert "output.weight" not in tensors  # tied: llama.cpp reads the embedding
        state = load_file(spm_models[arch] / "model.safetensors")
        np.testing.assert_allclose(tensors["output_norm.weight"], state["model.norm.weight"].numpy() + 1.0)
        np.testing.assert_allclose(tensors["blk.0.attn_norm.weight"],
                                   state["model.layers.0.input_layernorm.weight"].numpy() + 1.0)
    gemma2 = GGUFReader(tmp_path / "gemma2.gguf")
    assert _field(gemma2, "gemma2.attn_logit_softcapping") == 50.0
    assert _field(gemma2, "gemma2.final_logit_softcapping") == 30.0
    assert _field(gemma2, "gemma2.attention.sliding_window") == 8
    gemma3 = GGUFReader(tmp_path / "gemma3_text.gguf")
    assert _field(gemma3, "gemma3.rope.freq_base") == 1e6 and _field(gemma3, "gemma3.attention.key_length") == 256
    assert "blk.0.attn_q_norm.weight" in {t.name for t in gemma3.tensors}


def test_phi3_keeps_its_fused_tensors_and_rope(tmp_path, spm_models):
    from gguf import GGUFReader

    out = tmp_path / "phi3.gguf"
    write_gguf(spm_models["phi3"], out, GgufOptions(type="F32"))
    reader = GGUFReader(out)
    shapes = {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors}
    assert shapes["blk.0.attn_qkv.weight"] == (64, 64 + 2 * 32)  # GGUF lists dims innermost first
    assert shapes["blk.0.ffn_up.weight"] == (64, 2 * 128)  # gate and up stacked, as llama.cpp splits them
    assert "output.weight" in shapes  # Phi-3 does not tie
    assert _field(reader, "phi3.rope.dimension_count") == 16
    assert _field(reader, "phi3.rope.scaling.original_context_length") == 256
    assert _field(reader, "tokenizer.ggml.add_space_prefix") is True


def test_calibrated_codes_of_fused_phi3_tensors_are_written_as_they_are(tmp_path, spm_models):
    import torch
    from gguf import GGUFReader

    from slmkit.quantize.calibrate import Calibrator
    from slmkit.quantize.grids import grid_for
    from slmkit.quantize.packing import gguf_unpack

    class Recording(Calibrator):
        def run(self, model_dir, targets, cfg, tag):
            self.codes, summary = super().run(model_dir, targets, cfg, tag)
            return self.codes, summary

    g = torch.Generator().manual_seed(0)
    streams = [torch.randint(300, 640, (200,), generator=g).tolist() for _ in range(3)]
    cal = Recording(lambda: streams, tmp_path / "work", lambda _: None)
    out = tmp_path / "m.gguf"
    calibration = {"method": "gptq", "samples": 8, "seq_len": 32, "batch_size": 4}
    write_gguf(spm_models["phi3"], out, GgufOptions(type="Q8_0", calibration=calibration), cal)
    tensors = {t.name: t for t in GGUFReader(out).tensors}
    for hf, gg in (("self_attn.qkv_proj", "attn_qkv"), ("mlp.gate_up_proj", "ffn_up")):
        qw = cal.codes[f"model.layers.1.{hf}"]
        back = gguf_unpack(np.asarray(tensors[f"blk.1.{gg}.weight"].data), grid_for("gguf", 8, 32), qw.q.shape[1])
        assert torch.equal(back.q, qw.q) and torch.equal(back.scale, qw.scale)


def _with_config(src: Path, dst: Path, **changes) -> Path:
    import shutil

    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, **changes}))
    return dst


@pytest.mark.parametrize("arch,changes,match", [
    ("gemma2", {"layer_types": ["full_attention", "sliding_attention"]}, "not llama.cpp's gemma2 layout"),
    ("gemma2", {"query_pre_attn_scalar": 144}, "scales gemma2 attention by 1/sqrt"),
    ("phi3", {"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16}, "num_attention_heads x head_dim"),
    ("llama", {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}, "rope type 'linear'"),
])
def test_what_llama_cpp_s_graph_cannot_express_is_refused_before_writing(tmp_path, spm_models, arch, changes, match):
    model_dir = _with_config(spm_models[arch], tmp_path / "m", **changes)
    with pytest.raises(InputError, match=match):
        write_gguf(model_dir, tmp_path / "x.gguf", GgufOptions(type="F16"))
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.parametrize("arch,prune", [
    ("phi3", {"method": "width_mlp", "keep_ratio": 0.5}),
    ("phi3", {"method": "depth", "keep_layers": 1}),
    ("gemma2", {"method": "depth", "layers": [0, 1]}),  # sliding, full: llama.cpp's layout survives
    ("gemma3_text", {"method": "width_attention", "keep_kv_groups": 1}),
])
def test_pruned_models_export_and_verify(tmp_path, spm_models, arch, prune):
    import io

    from pydantic import TypeAdapter
    from transformers import AutoModelForCausalLM

    from slmkit.models import load_model, load_tokenizer, save_model
    from slmkit.progress import Reporter
    from slmkit.prune import PruneConfig
    from slmkit.prune.stage import prune_model
    from tests.prune_helpers import random_examples

    model, tok = load_model(spm_models[arch]), load_tokenizer(spm_models[arch])
    cfg = TypeAdapter(PruneConfig).validate_python({**prune, "calibration_samples": 8, "batch_size": 4})
    prune_model(model, cfg, random_examples(8), [], tok.pad_token_id, reporter=Reporter(io.StringIO()))
    save_model(model, tok, tmp_path / "pruned")
    AutoModelForCausalLM.from_pretrained(tmp_path / "pruned")  # plain transformers loads the pruned dir
    out = tmp_path / "model-F32.gguf"
    write_gguf(tmp_path / "pruned", out, GgufOptions(type="F32"))
    cfg = VerifyConfig(new_tokens=8, max_abs_diff_fp32=5e-3)
    result = verify_artifact("gguf", out, reference_logits(tmp_path / "pruned", cfg), "fp32", cfg)
    assert result["passed"] and result["top1_agreement"] == 1.0


def test_a_real_sentencepiece_model_is_read_with_sentencepiece(tmp_path, spm_models):
    pytest.importorskip("sentencepiece")
    import shutil

    import sentencepiece as spm
    from gguf import GGUFReader
    from gguf_helpers import save_sentencepiece_model

    src = save_sentencepiece_model(tmp_path / "spm")
    model_dir = shutil.copytree(spm_models["llama"], tmp_path / "m")
    shutil.copy(src / "tokenizer.model", model_dir / "tokenizer.model")
    write_gguf(model_dir, tmp_path / "x.gguf", GgufOptions(type="F16"))
    reader = GGUFReader(tmp_path / "x.gguf")
    sp = spm.SentencePieceProcessor(model_file=str(src / "tokenizer.model"))
    tokens, scores = _field(reader, "tokenizer.ggml.tokens"), _field(reader, "tokenizer.ggml.scores")
    n = sp.vocab_size()
    assert tokens[3:n] == [sp.IdToPiece(i) for i in range(3, n)]  # ids 0-2 are the added specials
    assert scores[10:n] == pytest.approx([sp.GetScore(i) for i in range(10, n)])


# an interpreter with llama-cpp-python (it has no wheel on PyPI for every platform: a local build will do)
_LLAMA_CPP = os.environ.get("SLMKIT_LLAMA_CPP_PYTHON")
_LLAMA_CPP_CHECK = """
import json, sys
import numpy as np
from llama_cpp import Llama
job = json.load(open(sys.argv[1]))
llm = Llama(job["gguf"], n_ctx=256, logits_all=True, verbose=False)
out = {"tokens": [llm.tokenize(t.encode(), add_bos=True, special=True) for t in job["texts"]], "diff": 0.0, "top1": []}
for seq, ref in zip(job["sequences"], job["logits"]):
    llm.reset()
    llm.eval(seq)
    got, ref = np.array(llm.scores[: len(seq)]), np.array(ref)
    out["diff"] = max(out["diff"], float(np.abs(got[:, : ref.shape[1]] - ref).max()))
    out["top1"] += (got[:, : ref.shape[1]].argmax(-1) == ref.argmax(-1)).tolist()
print(json.dumps(out))
"""


def _llama_cpp_python() -> str | None:
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is not None:
        return sys.executable
    return _LLAMA_CPP if _LLAMA_CPP and Path(_LLAMA_CPP).is_file() else None


@pytest.mark.parametrize("arch", list(SPM_ARCHS))
def test_llama_cpp_itself_loads_tokenizes_and_matches(tmp_path, spm_models, arch):
    python = _llama_cpp_python()
    if python is None:
        pytest.skip("llama-cpp-python is not installed (SLMKIT_LLAMA_CPP_PYTHON names an interpreter that has it)")
    from gguf_helpers import corpus
    from transformers import AutoTokenizer

    out = tmp_path / "model-F32.gguf"
    write_gguf(spm_models[arch], out, GgufOptions(type="F32"))
    ref = reference_logits(spm_models[arch], VerifyConfig(new_tokens=8))
    texts = corpus(20) + ["  two leading spaces", "tabs\tand\nnewlines", "emoji 🚀 ünïcödé", "<|user|>\nhi<|end|>"]
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"gguf": str(out), "texts": texts, "sequences": ref.sequences,
                               "logits": [x.tolist() for x in ref.logits]}))
    proc = subprocess.run([python, "-c", _LLAMA_CPP_CHECK, str(job)], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    tok = AutoTokenizer.from_pretrained(spm_models[arch])
    assert got["tokens"] == [tok(t)["input_ids"] for t in texts]  # llama.cpp tokenizes as transformers does
    # F32 weights; llama.cpp keeps its KV cache in F16, so only a near-tie may flip
    assert got["diff"] < 5e-3 and sum(got["top1"]) >= 0.95 * len(got["top1"])
