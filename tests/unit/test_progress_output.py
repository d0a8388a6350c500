"""Output in a pipe: rich tables become full-width plain lines; other libraries' warnings stay out unless -v."""

from __future__ import annotations

import io
import subprocess
import sys

from rich.table import Table
from rich.text import Text

from slmkit.progress import print_table, table_text

LONG = "quickstart/export/v1:gguf/model-Q4_0.gguf"


def _table() -> Table:
    t = Table(title="slmkit benchmark", caption="export/v1 keeps 0.91 of the teacher's rouge_l")
    for name in ("model", "backend", "decode tok/s", "reason"):
        t.add_column(name, overflow="fold")
    t.add_row(LONG, "llama_cpp", "118.4", Text("skipped: llama-cpp-python is not installed (pip install x)"))
    t.add_row("teacher", "torch_fp32", "27.9", "")
    return t


def test_a_piped_table_keeps_every_cell_whole_on_its_row():
    out = io.StringIO()  # not a TTY
    print_table(_table(), out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "slmkit benchmark"
    assert lines[1].split() == ["model", "backend", "decode", "tok/s", "reason"]
    row = next(line for line in lines if line.startswith(LONG))
    assert row.split()[:3] == [LONG, "llama_cpp", "118.4"]
    assert row.endswith("skipped: llama-cpp-python is not installed (pip install x)")
    assert len(row) > 80  # full width: nothing squeezed to 80 columns
    assert lines[-1] == "export/v1 keeps 0.91 of the teacher's rouge_l"
    assert not any(ch in out.getvalue() for ch in "│┃━─\x1b")  # no box drawing, no colour codes


def test_table_text_columns_line_up():
    lines = table_text(_table()).splitlines()
    header, teacher = lines[1], next(line for line in lines if line.startswith("teacher"))
    assert teacher.index("torch_fp32") == header.index("backend")
    assert teacher.index("27.9") == header.index("decode tok/s")


_EMIT = """
import logging, sys, warnings
from slmkit.progress import quiet_libraries
quiet_libraries(int(sys.argv[1]))
# what onnxruntime's int4 quantizer does when imported: it must not add a handler of its own
logging.basicConfig(format="%(asctime)s %(name)s [%(levelname)s] - %(message)s", level=logging.INFO)
logging.getLogger("onnx_ir.serde").warning("The model is invalid but we will still create a new input")
logging.getLogger("onnxruntime.quantization").info("quantizing MatMul node 3")
logging.getLogger("onnx_ir.serde").error("a real error")
warnings.warn("a library's FutureWarning", FutureWarning)
"""


def _stderr(level: int) -> list[str]:
    res = subprocess.run([sys.executable, "-c", _EMIT, str(level)], capture_output=True, text=True, check=True)
    return res.stderr.splitlines()


def test_library_warnings_show_only_with_verbose():
    assert _stderr(1) == ["ERROR onnx_ir.serde: a real error"]
    assert _stderr(0) == ["ERROR onnx_ir.serde: a real error"]
    verbose = _stderr(2)  # -v
    assert "WARNING onnx_ir.serde: The model is invalid but we will still create a new input" in verbose
    assert "ERROR onnx_ir.serde: a real error" in verbose
    assert not any("quantizing MatMul" in line for line in verbose)
    assert any("FutureWarning" in line for line in verbose)
    assert "INFO onnxruntime.quantization: quantizing MatMul node 3" in _stderr(3)  # -vv
