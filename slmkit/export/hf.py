"""The HF export: safetensors, config, generation config, tokenizer and chat template.

The input artifact already is an HF directory written by slmkit, so its files are copied
byte for byte (a re-save could change dtypes or shard names); only a missing generation
config is derived from the model config, because serving stacks read their stop tokens there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from slmkit.errors import InputError
from slmkit.quantize.files import disk_errors, ensure_free_space, path_size, read_causal_lm_config

# the parent artifact's own bookkeeping is not part of the model
_SKIP = {"manifest.json", "README.md", "recipe.yaml"}


def model_files(model_dir: Path) -> list[Path]:
    files = [p for p in sorted(Path(model_dir).iterdir()) if p.is_file() and p.name not in _SKIP]
    if not any(p.suffix == ".safetensors" for p in files):
        raise InputError(f"{model_dir}: no *.safetensors weights; the HF export needs safetensors")
    if not any(p.name == "tokenizer.json" or p.name.startswith("tokenizer") for p in files):
        raise InputError(f"{model_dir}: no tokenizer files; the HF export ships the tokenizer with the model")
    return files


def generation_config(config: dict) -> dict:
    """A minimal generation_config.json from the model config's special token ids."""
    keys = ("bos_token_id", "eos_token_id", "pad_token_id")
    return {k: config[k] for k in keys if config.get(k) is not None}


def export_hf(model_dir: Path, out_dir: Path) -> dict:
    """Copy the HF model files of ``model_dir`` into ``out_dir``; returns manifest details."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config = read_causal_lm_config(model_dir)
    files = model_files(model_dir)
    ensure_free_space(out_dir.parent, sum(f.stat().st_size for f in files), "hf export")
    with disk_errors(out_dir, "hf export"):
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(f, out_dir / f.name)
        if not (out_dir / "generation_config.json").exists():
            (out_dir / "generation_config.json").write_text(json.dumps(generation_config(config), indent=2))
    has_template = (out_dir / "chat_template.jinja").exists() or "chat_template" in (
        (out_dir / "tokenizer_config.json").read_text() if (out_dir / "tokenizer_config.json").exists() else ""
    )
    return {"files": sorted(p.name for p in out_dir.iterdir()), "size_bytes": path_size(out_dir), "chat_template": has_template}
