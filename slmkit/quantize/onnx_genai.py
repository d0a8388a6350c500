"""ONNX Runtime GenAI export through its model builder (int4 / int8 / fp16 / fp32, KV cache).

The builder writes ``model.onnx`` (+ ``model.onnx.data``), ``genai_config.json`` and the
tokenizer files; the directory runs with ``onnxruntime_genai`` alone. Measured on a 2-core CPU
(DESIGN.md): its int4 graph decodes ~4x faster than PyTorch fp32, which is why it is the
default CPU path.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import io
import json
import logging
import tempfile
from pathlib import Path

from slmkit.errors import InputError, SlmkitError
from slmkit.quantize.config import OnnxOptions
from slmkit.quantize.files import disk_errors, ensure_free_space, read_causal_lm_config, weights_size

_BITS = {"int4": 4, "int8": 8, "fp16": 16, "fp32": 32}
_SIZE_FACTOR = {"int4": 0.2, "int8": 0.35, "fp16": 0.55, "fp32": 1.1}
# the builder logs every MatMul it quantizes at INFO; keep it out of the user's terminal
_NOISY_LOGGERS = ("onnxruntime.quantization", "onnxruntime.quantization.matmul_nbits_quantizer")


def unties_embedding(opts: OnnxOptions, tied_embeddings: bool) -> bool:
    """Whether the builder must keep a tied embedding apart: an int8 lm_head over an int4 body."""
    return tied_embeddings and opts.precision == "int4" and "last_matmul:int8" in opts.mixed_precision


def builder_options(opts: OnnxOptions, tied_embeddings: bool = False) -> list[str]:
    """The builder's KEY=VALUE extra options for these settings.

    ``tied_embeddings``: the model shares its token embedding with the lm_head. The builder then
    gathers the embedding from the lm_head's int4 blocks, which breaks when ``last_matmul:int8``
    makes the lm_head 8-bit (the graph names an initializer that was never written and does not
    load); the builder is told to keep them apart, and ``tie_embedding_to_int8_head`` ties them
    again afterwards.
    """
    if opts.precision not in _BITS:
        raise InputError(f"onnx.precision {opts.precision!r} is unknown; expected one of {', '.join(_BITS)}")
    if opts.precision not in ("int4", "int8"):
        return []
    extra = [f"block_size={opts.block_size}"]
    if opts.algo != "default":
        extra.append(f"algo_config={opts.algo}")
    if opts.mixed_precision:
        extra.append(f"matmul_mixed_precision={','.join(opts.mixed_precision)}")
    if opts.accuracy_level:
        extra.append(f"accuracy_level={opts.accuracy_level}")
    if unties_embedding(opts, tied_embeddings):
        extra.append("shared_embeddings=false")
    return extra


@functools.lru_cache(maxsize=1)
def builder_architectures() -> frozenset[str]:
    """The causal-LM architectures the installed onnxruntime-genai model builder can build.

    Asked of the builder itself: its ``create_model`` dispatches on ``config.architectures[0]`` in an
    if/elif chain, which is read from its source (without importing it: the builder imports torch,
    and validation must not), so a newer builder's architectures are known without a slmkit release.
    """
    import importlib.util

    spec = importlib.util.find_spec("onnxruntime_genai")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    source = Path(next(iter(spec.submodule_search_locations))) / "models" / "builder.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    fn = next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "create_model"), None)
    found = set()
    for node in ast.walk(fn) if fn is not None else ():
        if isinstance(node, ast.Compare) and any(_is_architecture(x) for x in (node.left, *node.comparators)):
            found |= {c.value for c in (node.left, *node.comparators)
                      if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return frozenset(a for a in found if a.endswith("ForCausalLM"))


def _is_architecture(node) -> bool:
    """``config.architectures[0]`` (or any ``.architectures[...]``)."""
    return isinstance(node, ast.Subscript) and getattr(node.value, "attr", None) == "architectures"


def check_architecture(model_dir: Path) -> dict:
    config = read_causal_lm_config(model_dir)
    arch = config["architectures"][0]
    supported = builder_architectures()
    if arch not in supported:
        raise InputError(
            f"{model_dir / 'config.json'}: architecture {arch} cannot be exported to ONNX GenAI by the installed "
            f"onnxruntime-genai builder; it builds: {', '.join(sorted(supported)) or 'nothing (not installed)'}"
        )
    if (config.get("quantization_config") or {}).get("quant_method") == "gguf":
        raise InputError(
            f"{model_dir / 'config.json'}: carries quantization_config.quant_method=gguf (left by transformers' GGUF "
            "loader); save the dequantized model without it (slmkit's save_model does) before exporting"
        )
    return config


def _skipped_gather(record: logging.LogRecord) -> bool:
    """False for the quantizer's "Gather only supports 4 bits" ERROR: its 8-bit pass (an int8 lm_head)
    skips the embedding that the int4 pass quantizes, which is not an error of the export."""
    return "Gather only supports 4 bits" not in record.getMessage()


@contextlib.contextmanager
def _quiet_builder():
    """Capture the builder's prints and progress bars; restore logger levels afterwards."""
    loggers = [logging.getLogger(n) for n in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    buf = io.StringIO()
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
            lg.addFilter(_skipped_gather)
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield buf
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
            lg.removeFilter(_skipped_gather)


def build_onnx(model_dir: Path, out_dir: Path, opts: OnnxOptions, cache_dir: Path, calibration=None) -> dict:
    """Build the ONNX GenAI directory ``out_dir`` from an HF causal LM; returns manifest details.

    ``calibration``: a ``Calibrator`` (the stage's calibration data and work directory), needed when
    ``opts.calibration.method`` is not rtn: the builder's MatMulNBits weights are then replaced by
    the calibrated codes, so the graph and its operators, and with them the decode speed, stay the same.
    """
    from onnxruntime_genai.models import builder

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    tied = bool(check_architecture(model_dir).get("tie_word_embeddings"))
    extra = builder_options(opts, tied_embeddings=tied)
    ensure_free_space(out_dir.parent, int(weights_size(model_dir) * _SIZE_FACTOR[opts.precision]), "onnx export")
    with disk_errors(out_dir, "onnx export"), _quiet_builder() as log:
        try:
            parsed = builder.parse_extra_options(
                None, str(model_dir), str(out_dir), opts.precision, opts.execution_provider, str(cache_dir), extra
            )
            builder.create_model(
                None, str(model_dir), str(out_dir), opts.precision, opts.execution_provider, str(cache_dir), **parsed
            )
        except (NotImplementedError, ValueError, KeyError) as e:
            tail = log.getvalue()[-2000:]
            raise SlmkitError(f"onnxruntime-genai builder failed on {model_dir}: {e}\n{tail}") from e
    if not (out_dir / "genai_config.json").is_file():
        raise SlmkitError(f"onnxruntime-genai builder wrote no genai_config.json into {out_dir}")
    if unties_embedding(opts, tied) and opts.execution_provider == "cpu":
        # on CUDA the embedding stays the builder's separate fp16 matrix: an 8-bit
        # GatherBlockQuantized has not been run on a GPU here
        tie_embedding_to_int8_head(out_dir)
    calibrated = _calibrate(model_dir, out_dir, opts, calibration) if opts.calibration.method != "rtn" else None
    return {"calibration": calibrated, **_details(opts)}


def _details(opts: OnnxOptions) -> dict:
    return {
        "precision": opts.precision, "execution_provider": opts.execution_provider, "bits": _BITS[opts.precision],
        "block_size": opts.block_size if opts.precision in ("int4", "int8") else None,
        "algo": opts.algo if opts.precision in ("int4", "int8") else None,
        "mixed_precision": opts.mixed_precision or None,
        "accuracy_level": opts.accuracy_level if opts.precision in ("int4", "int8") else None,
    }


@contextlib.contextmanager
def builder_cache(work_dir: Path | None):
    """The builder's scratch directory: under the stage's work dir, else a temporary one."""
    if work_dir is not None:
        yield Path(work_dir) / "onnx_builder_cache"
    else:
        with tempfile.TemporaryDirectory(prefix="slmkit-onnx-") as tmp:
            yield Path(tmp)


# ---------------------------------------------------------------- calibrated weights in the built graph


def _calibrate(model_dir: Path, out_dir: Path, opts: OnnxOptions, calibration) -> dict:
    from slmkit.models import load_model

    if calibration is None:
        raise SlmkitError("onnx calibration needs calibration data; the stage passes it (see Calibrator)")
    modules = {n for n, _ in load_model(model_dir, "float32", "cpu").named_modules()}
    nodes = matmul_nbits(out_dir, modules)
    lm_head = [n for n in nodes if n["modules"] == ["lm_head"]]
    targets = {m: node_grid(n) for n in nodes for m in n["modules"]
               if opts.calibration.lm_head or n not in lm_head}
    codes, summary = calibration.run(model_dir, targets, opts.calibration, "onnx")
    summary["nodes_replaced"] = write_matmul_weights(out_dir, nodes, codes)
    return summary


def _hf_modules(b_name: str, modules: set[str]) -> list[str]:
    """The HF linears behind a MatMulNBits weight (``model.layers.0.attn.qkv_proj.MatMul.weight_Q4``):
    the builder names attention ``attn`` and fuses q, k and v into one MatMul."""
    base = b_name.split(".MatMul.")[0].replace(".attn.", ".self_attn.")
    if base in modules:
        return [base]
    parts = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
    head, _, last = base.rpartition(".")
    names = [f"{head}.{p}" for p in parts.get(last, ())]
    if names and all(n in modules for n in names):
        return names
    raise SlmkitError(f"MatMulNBits weight {b_name} maps to no linear of the model (looked for {base})")


def matmul_nbits(onnx_dir: Path, modules: set[str]) -> list[dict]:
    """Each MatMulNBits node of the graph: its initializers, K, N, bits, block size and HF linears."""
    import onnx

    graph = onnx.load(str(Path(onnx_dir) / _decoder_file(onnx_dir)), load_external_data=False).graph
    out = []
    for node in graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: a.i for a in node.attribute}
        inputs = list(node.input) + [""] * 4
        out.append({"node": node.name, "b": inputs[1], "scales": inputs[2], "zero_points": inputs[3] or None,
                    "k": attrs["K"], "n": attrs["N"], "bits": attrs["bits"], "block_size": attrs["block_size"],
                    "modules": _hf_modules(inputs[1], modules)})
    return out


def _decoder_file(onnx_dir: Path) -> str:
    return json.loads((Path(onnx_dir) / "genai_config.json").read_text())["model"]["decoder"]["filename"]


def node_grid(node: dict):
    from slmkit.quantize.grids import grid_for

    return grid_for("onnx", node["bits"], node["block_size"], symmetric=node["zero_points"] is None)


def write_matmul_weights(onnx_dir: Path, nodes: list[dict], codes: dict) -> int:
    """Replace the B / scales / zero points of every node whose linears all have codes; returns how many.

    Fused nodes (q/k/v) take their linears' codes stacked in the builder's row order.
    """
    import onnx
    from onnx import numpy_helper

    from slmkit.quantize.grids import QuantizedWeight
    from slmkit.quantize.packing import onnx_pack

    onnx_dir = Path(onnx_dir)
    model = onnx.load(str(onnx_dir / _decoder_file(onnx_dir)), load_external_data=True)
    inits = {i.name: i for i in model.graph.initializer}
    replaced = 0
    for node in nodes:
        parts = [codes.get(m) for m in node["modules"]]
        if any(p is None for p in parts):
            continue
        zero = None if parts[0].zero is None else torch_cat([p.zero for p in parts])
        qw = QuantizedWeight(torch_cat([p.q for p in parts]), torch_cat([p.scale for p in parts]), zero, parts[0].grid)
        for key, array in zip(("b", "scales", "zero_points"), onnx_pack(qw)):
            if node[key] is not None:
                old = inits[node[key]]
                old.CopyFrom(numpy_helper.from_array(array.reshape(tuple(old.dims)), old.name))
        replaced += 1
    _save_external(model, onnx_dir)
    return replaced


def tie_embedding_to_int8_head(onnx_dir: Path) -> bool:
    """Gather the token embedding from the lm_head's 8-bit blocks instead of a float copy.

    A tied model exported with an int8 lm_head (``last_matmul:int8``) comes out of the builder with
    its embedding as a separate float matrix (the builder can only share int4 blocks). The
    embedding is replaced by a ``GatherBlockQuantized`` over the lm_head's own codes and scales,
    as llama.cpp keeps a tied Q4_0 model's token_embd in Q8_0: one int8 matrix serves both, the
    float copy leaves the file, and the rows a token looks up are the ones the lm_head scores it
    with. Returns whether the graph was changed (False: no float embedding Gather or no symmetric
    8-bit lm_head to tie it to).
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    onnx_dir = Path(onnx_dir)
    model = onnx.load(str(onnx_dir / _decoder_file(onnx_dir)), load_external_data=True)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    gather = next((n for n in g.node if n.op_type == "Gather" and n.name.startswith("/model/embed_tokens/")
                   and n.input[0] in inits), None)
    head = next((n for n in g.node if n.op_type == "MatMulNBits" and n.name.startswith("/lm_head/")), None)
    if gather is None or head is None:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in head.attribute}
    k, n, bs = attrs["K"], attrs["N"], attrs["block_size"]
    emb = inits[gather.input[0]]
    if attrs["bits"] != 8 or (len(head.input) > 3 and head.input[3]) or k % bs or tuple(emb.dims) != (n, k):
        return False
    base = "/model/embed_tokens"
    shapes = [numpy_helper.from_array(np.array(v, dtype=np.int64), f"{base}/int8_{name}_shape")
              for name, v in (("codes", [n, k]), ("scales", [n, k // bs]))]
    new_nodes = [
        helper.make_node("Reshape", [head.input[1], shapes[0].name], [f"{base}/int8_codes"], name=f"{base}/ReshapeCodes"),
        helper.make_node("Reshape", [head.input[2], shapes[1].name], [f"{base}/int8_scales"],
                         name=f"{base}/ReshapeScales"),
        helper.make_node("GatherBlockQuantized", [f"{base}/int8_codes", gather.input[1], f"{base}/int8_scales"],
                         list(gather.output), name=f"{base}/GatherBlockQuantized", domain="com.microsoft",
                         bits=8, block_size=bs, gather_axis=0, quantize_axis=1),
    ]
    at = list(g.node).index(gather)
    g.node.remove(gather)
    for i, node in enumerate(new_nodes):
        g.node.insert(at + i, node)
    if not any(emb.name in node.input for node in g.node):
        g.initializer.remove(emb)
    g.initializer.extend(shapes)
    _save_external(model, onnx_dir)
    return True


def torch_cat(parts):
    import torch

    return torch.cat(parts, dim=0)


def _save_external(model, onnx_dir: Path) -> None:
    # overwritten in place: the graph is in memory, and the export writes into the stage's
    # temporary directory, which only becomes an artifact when everything was written and verified
    import onnx

    name = _decoder_file(onnx_dir)
    # onnx appends tensors to an existing external-data file: without removing it first the file
    # would hold the builder's weights and the replacements (twice the size on disk); every
    # tensor is in memory (loaded with load_external_data=True) before this point
    (onnx_dir / f"{name}.data").unlink(missing_ok=True)
    onnx.save_model(model, str(onnx_dir / name), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{name}.data", size_threshold=1024)
    # onnx creates the data file owner-only (0600); a serving user other than the exporter could
    # not read it: give it the graph file's mode, which follows the umask
    (onnx_dir / f"{name}.data").chmod((onnx_dir / name).stat().st_mode & 0o777)


def read_matmul_weights(onnx_dir: Path, nodes: list[dict]) -> dict:
    """node name -> the QuantizedWeight its initializers hold (for checking a written graph)."""
    import onnx
    from onnx import numpy_helper

    from slmkit.quantize.packing import onnx_unpack

    model = onnx.load(str(Path(onnx_dir) / _decoder_file(onnx_dir)), load_external_data=True)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n["node"]: onnx_unpack(inits[n["b"]], inits[n["scales"]], inits.get(n["zero_points"]), node_grid(n),
                                   n["k"], n["n"]) for n in nodes}
