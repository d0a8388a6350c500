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
