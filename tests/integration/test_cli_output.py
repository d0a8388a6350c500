"""The CLI's output in a pipe (CI logs): plain lines, tables at full width, no other library's warnings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BOX = "│┃━─┏┓┗┛╭╮╰╯"


def _recipe(tmp_path: Path, teacher: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""\
name: piped
output_dir: {tmp_path / 'runs'}
teacher: {{model: {teacher}}}
data:
  eval: {{path: builtin:heldout, max_samples: 4, max_length: 48}}
stages:
  - export: {{formats: [onnx], onnx: {{precision: int4, block_size: 32}}, verify: {{mode: warn, new_tokens: 4}}}}
  - benchmark:
      quality: [perplexity]
      primary_metric: perplexity
      eval_samples: 4
      general_text: null
      speed: {{backends: [torch_fp32, onnxruntime_genai], batch_sizes: [1], warmup: 0, repeats: 1, new_tokens: 4,
               concurrency: 0, isolate: false}}
""")
    return path


def _run(tmp_path: Path, recipe: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "80", "TERM": "xterm-256color"}
    return subprocess.run([sys.executable, "-m", "slmkit", "run", str(recipe), "--output-dir",
                           str(tmp_path / "runs"), *flags], capture_output=True, text=True, env=env, timeout=600)


def test_a_piped_run_prints_plain_full_width_lines_and_no_library_warnings(tmp_path, tiny_llama_dir):
    res = _run(tmp_path, _recipe(tmp_path, tiny_llama_dir))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = res.stdout + res.stderr
    assert "WARNING" not in out and "The model is invalid" not in out
    assert not any(ch in out for ch in BOX) and "\x1b[" not in out  # no rich box, no colour codes
    table = res.stderr.splitlines()  # the benchmark's table goes to stderr (stdout is --json's)
    header = next(i for i, line in enumerate(table) if line.split()[:2] == ["model", "backend"])
    rows = [line for line in table[header + 2:] if line.strip()]
    onnx = next(line for line in rows if "onnxruntime_genai" in line)
    assert onnx.split()[:3] == ["piped/export/v1", "onnxruntime_genai", "1"]  # a whole row on one line
    assert float(onnx.split()[3].replace(",", "")) > 0  # decode tok/s (people's format: 2,880)
    assert any(len(line) > 80 for line in rows)  # at full width, not squeezed into COLUMNS=80
