"""File-system helpers shared by the quantize and export backends: input checks, sizes, disk errors."""

from __future__ import annotations

import errno
import json
import shutil
from contextlib import contextmanager
from pathlib import Path

from slmkit.errors import InputError, SlmkitError

# errors that mean "the disk (or the file-size limit) is full", as opposed to a bug
_DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def read_causal_lm_config(model_dir: Path) -> dict:
    """The input's config.json, after checking it describes a causal LM (``*ForCausalLM``)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise InputError(f"{model_dir}: no config.json; expected a Hugging Face model directory")
    config = json.loads(path.read_text())
    archs = config.get("architectures") or []
    if not archs or not archs[0].endswith("ForCausalLM"):
        raise InputError(
            f"{path}: architectures={archs!r} is not a causal language model; quantize and export "
            "accept `*ForCausalLM` models only"
        )
    return config


def path_size(path: Path) -> int:
    """Bytes on disk of a file or of every file under a directory."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def weights_size(model_dir: Path) -> int:
    """Bytes of the weight files (safetensors / bin) of an HF directory."""
    files = [*Path(model_dir).glob("*.safetensors"), *Path(model_dir).glob("*.bin")]
    return sum(f.stat().st_size for f in files)


def ensure_free_space(target_dir: Path, needed: int, what: str) -> None:
    """Fail before writing when the disk clearly cannot hold the output (no partial files)."""
    target_dir = Path(target_dir)
    probe = target_dir if target_dir.exists() else target_dir.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise InputError(
            f"{what}: needs about {needed / 2**20:.1f} MiB in {probe} but only {free / 2**20:.1f} MiB "
            "are free; free some space or set output_dir elsewhere"
        )


def _is_disk_full(e: OSError) -> bool:
    # numpy's ndarray.tofile (used by the gguf writer) reports a short write without an errno
    short_write = e.errno is None and "requested and" in str(e) and "written" in str(e)
    return e.errno in _DISK_FULL or short_write


def remove_path(path: Path) -> None:
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


@contextmanager
def disk_errors(target: Path, what: str):
    """Turn a full disk while writing ``target`` into a SlmkitError and remove the partial output.

    The pipeline commits nothing when a stage raises; removing the half-written file as well
    means a direct library call leaves nothing behind either.
    """
    try:
        yield
    except OSError as e:
        if not _is_disk_full(e):
            raise
        remove_path(target)
        raise SlmkitError(
            f"{what}: the disk filled up while writing {target} ({e.strerror or e}); the partial output "
            "was removed and nothing was committed"
        ) from e
