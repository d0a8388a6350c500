"""Integrity checks before a runtime maps a file: a truncated file can crash it instead of raising."""

from __future__ import annotations

import json
from pathlib import Path

from slmkit.errors import SlmkitError


class VerificationFailed(SlmkitError):
    """A written artifact does not load in its runtime or does not match the source model."""


def check_onnx_files(onnx_dir: Path) -> None:
    """genai_config.json parses and every external weight lies inside its data file."""
    import onnx

    onnx_dir = Path(onnx_dir)
    try:
        config = json.loads((onnx_dir / "genai_config.json").read_text())
        model_file = onnx_dir / config["model"]["decoder"]["filename"]
        graph = onnx.load(str(model_file), load_external_data=False).graph
    except Exception as e:  # any parse error means the directory is not a usable export
        raise VerificationFailed(f"{onnx_dir}: not a loadable onnxruntime-genai directory ({e})") from e
    needed: dict[str, int] = {}
    for init in graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in init.external_data}
        end = int(info.get("offset", 0)) + int(info.get("length", 0))
        needed[info["location"]] = max(needed.get(info["location"], 0), end)
    for name, end in needed.items():
        data = onnx_dir / name
        size = data.stat().st_size if data.is_file() else -1
        if size < end:
            raise VerificationFailed(f"{data}: {size} bytes, but the graph references {end}; "
                                     "the file is truncated or missing")


def check_gguf_file(path: Path) -> None:
    """The header parses and every tensor's data lies inside the file."""
    from gguf import GGUFReader

    path = Path(path)
    try:
        reader = GGUFReader(path)
    except Exception as e:
        raise VerificationFailed(f"{path}: not a readable GGUF file ({e})") from e
    size = path.stat().st_size
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise VerificationFailed(f"{path}: tensor {t.name} ends past the end of the file; it is truncated")
