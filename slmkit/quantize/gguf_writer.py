"""Write a Hugging Face causal LM as a GGUF file for llama.cpp / Ollama with the `gguf` package.

The layout follows llama.cpp's own converter (convert_hf_to_gguf.py): tensor names from
``gguf.get_tensor_name_map``, Q/K rows of Llama-family attention permuted to llama.cpp's rotary
layout, Gemma's norm weights stored as 1 + w (llama.cpp multiplies by the stored weight), Phi-3's
fused qkv / gate_up tensors as they are, 1-D tensors kept in F32, the per-architecture keys
(Gemma 2 soft-capping, sliding windows, Phi-3's rope), and the vocabulary: byte-level BPE with
merges (SmolLM, Llama 3, Qwen, Mistral Tekken) or SentencePiece with scores and token types
(Llama 2, Mistral v0.1, Gemma, Phi-3; see gguf_vocab), special tokens and the chat template.
What llama.cpp's graph for an architecture cannot express (a sliding-window layout other than its
fixed one, scaled rope, ...) is refused before anything is written.
"""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path

import numpy as np

from slmkit.errors import InputError
from slmkit.quantize.config import GgufOptions
from slmkit.quantize.files import disk_errors, ensure_free_space, read_causal_lm_config, weights_size
from slmkit.quantize.gguf_vocab import is_sentencepiece, spm_vocab

# HF architecture -> GGUF architecture. Mistral is the llama graph in llama.cpp; Gemma3ForCausalLM
# is Gemma 3's text-only model (the multimodal Gemma3ForConditionalGeneration is not written).
GGUF_ARCHS = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "GemmaForCausalLM": "gemma",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3",
    "Phi3ForCausalLM": "phi3",
}
# llama.cpp rotates adjacent pairs for these; HF checkpoints rotate halves (see permute_qk)
_PERMUTE_QK = {"LlamaForCausalLM", "MistralForCausalLM"}
# Gemma's RMSNorm computes x * (1 + w); llama.cpp's computes x * w, so the converter stores 1 + w
_NORM_PLUS_ONE = {"gemma", "gemma2", "gemma3"}
# llama.cpp fixes Gemma 2/3's attention layout: every n-th layer full, the others sliding-window
_SWA_PERIOD = {"gemma2": 2, "gemma3": 6}
_GEMMA_27B_LAYERS = {"gemma2": 46, "gemma3": 62}  # the one size llama.cpp scales by n_embd / n_head

# bytes per weight relative to fp32, to check free space before writing
_SIZE_FACTOR = {"F32": 1.0, "F16": 0.5, "Q8_0": 0.27, "Q4_0": 0.15, "Q4_K": 0.15}

# llama.cpp identifies a BPE pre-tokenizer by the hash of the token ids of this text
# (convert_hf_to_gguf.py, get_vocab_base_pre); the table holds the families slmkit supports.
_CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) "
    "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? "
    "'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
_PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
}


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the rows of a q/k projection from HF's rotate-half layout to llama.cpp's pairs.

    Within each head, HF puts the two halves of every rotary pair ``d`` apart; llama.cpp wants
    them adjacent. Same as ``LlamaModel.permute`` in llama.cpp's converter.
    """
    head_dim = w.shape[0] // n_head
    return (
        w.reshape(n_head, 2, head_dim // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def tensor_type(name: str, shape: tuple[int, ...], opts: GgufOptions):
    """GGML type of one tensor: norms/biases in F32, embedding/output at `output_type`, rest `type`.

    A row length that is not a multiple of the format's block size falls back to F16, as
    llama.cpp's converter does.
    """
    from gguf import GGML_QUANT_SIZES
    from gguf import GGMLQuantizationType as T

    if len(shape) < 2:
        return T.F32
    wanted = opts.type
    if name in ("token_embd.weight", "output.weight"):
        wanted = opts.output_type or ("Q8_0" if opts.type in ("Q4_0", "Q4_K") else opts.type)
    qtype = T[wanted]
    block = GGML_QUANT_SIZES[qtype][0]
    if shape[-1] % block != 0:
        return T.F16
    return qtype


def encode_tensor(arr: np.ndarray, qtype) -> np.ndarray:
    """The bytes (or float array) the writer stores for ``arr`` as ``qtype``."""
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    if qtype == T.F32:
        return arr.astype(np.float32)
    if qtype == T.F16:
        return arr.astype(np.float16)
    try:
        return quants.quantize(arr.astype(np.float32), qtype)
    except NotImplementedError as e:
        raise InputError(
            f"gguf.type {qtype.name}: the installed gguf package cannot write it; use Q4_0, Q8_0 or F16 "
            "(or re-quantize the F16 file with llama.cpp's llama-quantize)"
        ) from e


def check_writable_type(opts: GgufOptions) -> None:
    """Fail before any work when the gguf package cannot encode the requested type."""
    from gguf import GGML_QUANT_SIZES
    from gguf import GGMLQuantizationType as T

    for name in {opts.type, opts.output_type or opts.type}:
        qtype = T[name]
        block = GGML_QUANT_SIZES[qtype][0]
        encode_tensor(np.zeros((1, block), dtype=np.float32), qtype)


def gguf_arch(config: dict, config_path: Path) -> str:
    arch = config["architectures"][0]
    if arch not in GGUF_ARCHS:
        raise InputError(
            f"{config_path}: architecture {arch} cannot be written as GGUF; supported: {', '.join(sorted(GGUF_ARCHS))}"
        )
    return GGUF_ARCHS[arch]


def _rope_params(config: dict) -> dict:
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    # Gemma 3 keeps one rope per attention type; the full-attention one is the model's base rope
    return params.get("full_attention", params)


def architecture_problem(config: dict, where: str) -> str | None:
    """Why a model with this config.json cannot be written as GGUF, or None; reads nothing else.

    Recipe validation asks before any stage runs; a partial config (a GGUF's metadata) is only
    checked for what it holds, and the writer checks the real one again.
    """
    arch = (config.get("architectures") or [None])[0]
    if arch not in GGUF_ARCHS:
        return f"architecture {arch} cannot be written as GGUF; supported: {', '.join(sorted(GGUF_ARCHS))}"
    try:
        rope_theta(config, Path(where))
        check_graph_fits(GGUF_ARCHS[arch], config, Path(where))
    except InputError as e:
        return str(e).removeprefix(f"{where}: ")
    except (KeyError, TypeError):  # sizes the partial config lacks: the writer checks the real config
        pass
    import importlib.util

    if GGUF_ARCHS[arch] == "gemma" and importlib.util.find_spec("llama_cpp") is None:
        # transformers' GGUF loader (the verifier without llama.cpp) has no gemma graph
        return ("a Gemma 1 GGUF file can be verified in llama.cpp only, and llama-cpp-python is not installed: "
                "pip install 'slmkit[llamacpp]', or export another format")
    return None


def rope_theta(config: dict, config_path: Path) -> float:
    """Rope base frequency; scaled rope variants are refused rather than silently dropped."""
    params = _rope_params(config)
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ("default", None):
        raise InputError(f"{config_path}: rope type {kind!r} is not supported by the GGUF writer; supported: default")
    return float(params.get("rope_theta", config.get("rope_theta", 10000.0)))


def _rotary_dims(config: dict, head_dim: int) -> int:
    # partial rotary (Phi-3.5 / Phi-4-mini): llama.cpp rotates the first rope.dimension_count dims
    factor = _rope_params(config).get("partial_rotary_factor", config.get("partial_rotary_factor")) or 1.0
    return int(head_dim * factor)


def check_graph_fits(arch: str, config: dict, config_path: Path) -> None:
    """InputError when llama.cpp's graph for ``arch`` would compute something else than the HF model."""
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    if arch in _SWA_PERIOD and config.get("layer_types"):
        period = _SWA_PERIOD[arch]
        fixed = ["sliding_attention" if (i + 1) % period else "full_attention" for i in range(len(config["layer_types"]))]
        if config["layer_types"] != fixed:
            raise InputError(
                f"{config_path}: layer_types {config['layer_types']} is not llama.cpp's {arch} layout (every "
                f"{period}{'nd' if period == 2 else 'th'} layer full attention, the others sliding); a depth-pruned "
                "Gemma must keep that pattern (prune.layers) to be written as GGUF"
            )
    scalar = config.get("query_pre_attn_scalar")
    if arch in _SWA_PERIOD and scalar is not None and scalar != head_dim:
        wide = config["num_hidden_layers"] == _GEMMA_27B_LAYERS[arch] and scalar == config["hidden_size"] // config[
            "num_attention_heads"]
        if not wide:
            raise InputError(f"{config_path}: query_pre_attn_scalar={scalar} but llama.cpp scales {arch} attention by "
                             f"1/sqrt(head_dim={head_dim})")
    if arch == "gemma3":
        local = (config.get("rope_parameters") or {}).get("sliding_attention", {}).get("rope_theta", 10000.0)
        if float(local) != 10000.0 or config.get("final_logit_softcapping") or config.get("attn_logit_softcapping"):
            raise InputError(f"{config_path}: llama.cpp's gemma3 graph fixes the sliding layers' rope base at 10000 "
                             "and applies no soft-capping; this model differs")
    if arch == "phi3" and config["num_attention_heads"] * head_dim != config["hidden_size"]:
        raise InputError(f"{config_path}: llama.cpp's phi3 graph splits qkv_proj assuming num_attention_heads x "
                         f"head_dim = hidden_size ({config['num_attention_heads']} x {head_dim} != "
                         f"{config['hidden_size']}); a Phi-3 pruned with width_attention cannot be written as GGUF")


def write_hparams(writer, arch: str, config: dict, config_path: Path, file_type: int) -> None:
    n_head = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    writer.add_name(Path(config.get("_name_or_path") or "slmkit-model").name or "slmkit-model")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(config.get("num_key_value_heads") or n_head)
    writer.add_rope_freq_base(rope_theta(config, config_path))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_dimension_count(_rotary_dims(config, head_dim))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(file_type)
    writer.add_quantization_version(2)
    _arch_hparams(writer, arch, config)


def _arch_hparams(writer, arch: str, config: dict) -> None:
    """The keys llama.cpp's converter writes for one architecture only."""
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(config["attn_logit_softcapping"])
        writer.add_final_logit_softcapping(config["final_logit_softcapping"])
    if arch in ("gemma2", "gemma3"):
        writer.add_sliding_window(config["sliding_window"])
    if arch == "phi3":
        if config.get("original_max_position_embeddings"):
            writer.add_rope_scaling_orig_ctx_len(config["original_max_position_embeddings"])
        writer.add_sliding_window(config.get("sliding_window") or 0)


def bpe_pre_tokenizer(tokenizer) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer, found by the converter's hash."""
    digest = sha256(str(tokenizer.encode(_CHKTXT)).encode()).hexdigest()
    if digest not in _PRE_TOKENIZERS:
        raise InputError(
            f"the tokenizer's pre-tokenizer (hash {digest[:12]}) is not one slmkit can name for llama.cpp; "
            f"recognised: {', '.join(sorted(set(_PRE_TOKENIZERS.values())))}; set gguf.tokenizer_pre to the name "
            "llama.cpp uses for this tokenizer"
        )
    return _PRE_TOKENIZERS[digest]


def vocab_tokens(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Token strings and GGUF token types for ids 0..vocab_size-1 (padding ids become UNUSED)."""
    from gguf import TokenType

    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = {t.content: t.special for t in tokenizer.added_tokens_decoder.values()}
    tokens, types = [], []
    for i in range(vocab_size):
        tok = reverse.get(i)
        if tok is None:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif tok in added:
            tokens.append(tok)
            types.append(TokenType.CONTROL if added[tok] else TokenType.USER_DEFINED)
        else:
            tokens.append(tok)
            types.append(TokenType.NORMAL)
    return tokens, types


def write_tokenizer(writer, model_dir: Path, vocab_size: int, pre: str | None = None, arch: str = "llama") -> str:
    """Vocabulary, merges or scores, special token ids and chat template; returns the pre-tokenizer name."""
    if is_sentencepiece(model_dir):
        return write_sentencepiece(writer, model_dir, vocab_size, arch)
    return write_byte_level_bpe(writer, model_dir, vocab_size, pre)


def write_sentencepiece(writer, model_dir: Path, vocab_size: int, arch: str) -> str:
    """A SentencePiece vocabulary as llama.cpp's ``llama`` tokenizer (``_set_vocab_sentencepiece``)."""
    import gguf

    vocab = spm_vocab(model_dir, vocab_size, arch)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    writer.add_add_space_prefix(vocab.add_space_prefix)
    special = gguf.SpecialVocab(model_dir, load_merges=False, n_vocab=vocab_size)
    _chat_template_fallback(special, model_dir)
    special.add_to_gguf(writer, quiet=True)
    return "default"


def _chat_template_fallback(special, model_dir: Path) -> None:
    template = model_dir / "chat_template.jinja"  # transformers 5 saves the template beside the tokenizer
    if special.chat_template is None and template.is_file():
        special.chat_template = template.read_text(encoding="utf-8")


def write_byte_level_bpe(writer, model_dir: Path, vocab_size: int, pre: str | None) -> str:
    """A byte-level BPE vocabulary (GPT-2 style) with its merges and llama.cpp's pre-tokenizer name."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer_json = model_dir / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise InputError(f"{model_dir}: no tokenizer.json or tokenizer.model; the GGUF writer needs a fast "
                         "(byte-level BPE) or a SentencePiece tokenizer")
    model = json.loads(tokenizer_json.read_text()).get("model", {})
    if model.get("type") != "BPE":
        raise InputError(
            f"{tokenizer_json}: tokenizer type {model.get('type')!r} is not supported by the GGUF writer; "
            "supported: byte-level BPE (GPT-2 style) and SentencePiece (Unigram, or BPE with byte fallback)"
        )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pre = pre or bpe_pre_tokenizer(tokenizer)
    tokens, types = vocab_tokens(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    if special.chat_template is None and getattr(tokenizer, "chat_template", None):
        special.chat_template = tokenizer.chat_template
    special.add_to_gguf(writer, quiet=True)
    return pre


def gguf_tensors(state: dict, config: dict, arch: str, n_layers: int, codes: dict | None = None):
    """Yield (gguf name, fp32 numpy array or calibrated QuantizedWeight) in llama.cpp's layout.

    A tied lm_head is skipped; a linear with calibrated ``codes`` yields them, rows moved exactly as
    the weight's would be (Q/K permutation), so each row's blocks stay intact. Phi-3's fused
    qkv_proj / gate_up_proj keep their row order: llama.cpp splits them the way transformers does.
    """
    import gguf

    arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    name_map = gguf.get_tensor_name_map(arch_enum, n_layers)
    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_head
    permute = config["architectures"][0] in _PERMUTE_QK
    tied = config.get("tie_word_embeddings") or arch in _NORM_PLUS_ONE  # Gemma always ties its output
    for hf_name, tensor in state.items():
        if hf_name == "lm_head.weight" and tied:
            continue
        base, _, suffix = hf_name.rpartition(".")
        name = name_map.get_name(base)
        if name is None:
            raise InputError(f"tensor {hf_name} has no GGUF name for architecture {arch}; is the checkpoint modified?")
        heads = n_head if base.endswith("self_attn.q_proj") else n_kv if base.endswith("self_attn.k_proj") else 0
        heads = heads if permute else 0
        if codes and suffix == "weight" and base in codes:
            yield f"{name}.{suffix}", _permute_codes(codes[base], heads)
            continue
        arr = tensor.float().numpy()
        if arch in _NORM_PLUS_ONE and hf_name.endswith("norm.weight"):
            arr = arr + 1.0
        yield f"{name}.{suffix}", permute_qk(arr, heads) if heads else arr


def _permute_codes(qw, heads: int):
    if not heads:
        return qw
    import torch

    from slmkit.quantize.grids import QuantizedWeight

    rows = torch.from_numpy(permute_qk(torch.arange(qw.q.shape[0]).numpy(), heads).copy())
    return QuantizedWeight(qw.q[rows], qw.scale[rows], None if qw.zero is None else qw.zero[rows], qw.grid)


def calibration_targets(state: dict, config: dict, opts: GgufOptions) -> dict:
    """The decoder's linears (token embedding and output stay at ``output_type``), on the type's grid."""
    from slmkit.quantize.grids import grid_for

    grid = grid_for("gguf", 4 if opts.type == "Q4_0" else 8, 32)
    out = {}
    for name, t in state.items():
        base = name.removesuffix(".weight")
        if name.endswith(".weight") and t.dim() == 2 and ".layers." in base and t.shape[1] % 32 == 0:
            out[base] = grid
    return out


def _encoded(name: str, arr, opts: GgufOptions):
    """(GGML type, bytes or floats to store) of one tensor: calibrated codes are packed as they are."""
    from gguf import GGMLQuantizationType as T

    from slmkit.quantize.grids import QuantizedWeight

    if isinstance(arr, QuantizedWeight):
        from slmkit.quantize.packing import gguf_pack

        return T[opts.type], gguf_pack(arr)
    qtype = tensor_type(name, arr.shape, opts)
    return qtype, encode_tensor(arr, qtype)


def _load_state(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise InputError(f"{model_dir}: no *.safetensors weights to convert to GGUF")
    state = {}
    for f in files:
        state.update(load_file(f))
    return state


def write_gguf(model_dir: Path, out_path: Path, opts: GgufOptions, calibration=None) -> dict:
    """Write ``model_dir`` (an HF causal LM directory) as one GGUF file; returns manifest details.

    ``calibration``: a ``slmkit.quantize.calibrate.Calibrator``, needed when
    ``opts.calibration.method`` is not rtn: the decoder's Q4_0 / Q8_0 blocks then hold calibrated codes.
    """
    import gguf

    model_dir, out_path = Path(model_dir), Path(out_path)
    config = read_causal_lm_config(model_dir)
    arch = gguf_arch(config, model_dir / "config.json")
    check_graph_fits(arch, config, model_dir / "config.json")
    check_writable_type(opts)
    ensure_free_space(out_path.parent, int(weights_size(model_dir) * _SIZE_FACTOR[opts.type]), "gguf export")
    file_type = {"F32": 0, "F16": 1, "Q8_0": 7, "Q4_0": 2, "Q4_K": 15}[opts.type]
    writer = gguf.GGUFWriter(out_path, arch)
    write_hparams(writer, arch, config, model_dir / "config.json", file_type)
    pre = write_tokenizer(writer, model_dir, config["vocab_size"], opts.tokenizer_pre, arch)
    state = _load_state(model_dir)
    codes, summary = None, None
    if opts.calibration.method != "rtn":
        if calibration is None:
            raise InputError("gguf calibration needs calibration data; the stage passes it (see Calibrator)")
        codes, summary = calibration.run(model_dir, calibration_targets(state, config, opts), opts.calibration, "gguf")
    counts: dict[str, int] = {}
    for name, arr in gguf_tensors(state, config, arch, config["num_hidden_layers"], codes):
        qtype, data = _encoded(name, arr, opts)
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
        writer.add_tensor(name, data, raw_dtype=qtype if qtype not in (0, 1) else None)
    with disk_errors(out_path, "gguf export"):
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return {
        "architecture": arch, "type": opts.type, "tensor_types": counts, "tokenizer_pre": pre, "calibration": summary,
        "block_size": gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[opts.type]][0],
        "bits": {"F32": 32, "F16": 16, "Q8_0": 8, "Q4_0": 4, "Q4_K": 4}[opts.type],
    }
