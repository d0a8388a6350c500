"""Facts about the machine and libraries, recorded in manifests and benchmark results."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_info(cpuinfo: str | None = None) -> dict:
    """CPU model, logical and physical cores, and the SIMD/matrix flags that decide CPU speed."""
    import psutil

    if cpuinfo is None:
        p = Path("/proc/cpuinfo")
        cpuinfo = p.read_text() if p.exists() else ""
    model, flags = platform.processor() or platform.machine(), set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() in ("flags", "Features"):
            flags.update(value.split())
    wanted = sorted(f for f in flags if f.startswith(("amx", "avx", "fma", "sve", "asimd")))
    return {
        "model": model,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "flags": wanted,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in (
        "slmkit",
        "datasets",
        "accelerate",
        "gguf",
        "torch",
        "transformers",
        "onnxruntime",
        "onnxruntime-genai",
        "llama-cpp-python",
        "vllm",
        "numpy",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def hardware_info() -> dict:
    import torch

    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {
            "name": props.name,
            "memory_gb": round(props.total_memory / 2**30, 1),
            "count": torch.cuda.device_count(),
        }
    return {
        "cpu": cpu_info(),
        "gpu": gpu,
        "os": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "libraries": library_versions(),
    }


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_GLIBC_DEFAULT_THRESHOLD = 128 * 1024  # both thresholds start at 128 KiB
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # the largest value glibc accepts on 64-bit


def _libc():
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018  (musl has no mallopt)
        return libc
    except (OSError, AttributeError):
        return None


class training_allocator:
    """Keep freed CPU memory in the heap while a training loop runs (glibc only).

    A CPU training step allocates and frees the same few gigabytes of activations every step.
    With glibc's defaults, blocks above a threshold come from fresh ``mmap`` pages and freed
    heap tops go back to the kernel, so every step pays a page fault per 4 KiB touched: for a
    135M-parameter student that was ~700k faults and ~30% of the step in the kernel. Raising
    the mmap threshold to its maximum (32 MiB) and the trim threshold out of reach makes the
    step reuse its own memory. Peak memory is unchanged (the same blocks are reused); memory
    stays reserved until the context exits, when glibc's starting thresholds (128 KiB) come
    back and the heap is trimmed. glibc has no way to re-enable its dynamic threshold once
    ``mallopt`` was called, so the rest of the process keeps fixed 128 KiB thresholds.
    ``SLMKIT_MALLOC_TUNING=0`` turns it off. A no-op off Linux/glibc.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and os.environ.get("SLMKIT_MALLOC_TUNING", "1") != "0"
        self.active = False

    def __enter__(self):
        libc = _libc() if self.enabled else None
        if libc is not None:
            ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
            self.active = bool(ok)
        return self

    def __exit__(self, *exc):
        if self.active:
            libc = _libc()
            libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)
            libc.malloc_trim(0)
            self.active = False
        return False
