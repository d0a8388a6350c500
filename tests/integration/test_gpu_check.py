"""scripts/gpu_check.sh on a machine without a GPU: valid recipes, then one clean error line per path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"
PATHS = ["distill_bf16_compiled", "distill_fsdp_1proc", "llmcompressor_fp8_vllm", "llmcompressor_w4a16_vllm",
         "torchao_int4", "ranking_scorer_cuda"]


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "SLMKIT_GPU_CHECK_DIR": str(tmp_path)}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


def test_the_generated_recipes_are_valid(tmp_path):
    res = _run(tmp_path, "--validate")
    assert res.returncode == 0, res.stdout + res.stderr
    assert {p.name for p in tmp_path.glob("*.yaml")} >= {"distill.yaml", "llmc.yaml", "torchao.yaml"}


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA driver")
def test_without_a_gpu_every_path_is_one_error_line_with_the_reason(tmp_path):
    res = _run(tmp_path)
    assert res.returncode == 1
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [line["path"] for line in lines] == PATHS
    for line in lines:
        assert line["status"] == "error" and line["reason"].startswith("no CUDA device:"), line
        assert line["figures"] == {}
