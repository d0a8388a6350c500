"""Scorers to ONNX (torch.onnx) plus onnxruntime dynamic int8, each file verified against PyTorch.

The exported graph is the whole scorer: tokens in, label logits [B, K] out. For a causal-LM
scorer that includes the last-position gather and the K verbalizer rows of the LM head, so
the serving side never materialises full-vocabulary logits. Verification reruns the same rows
through onnxruntime and compares label logits and P(label) with the PyTorch scores, like the
other exports verify what they wrote.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from slmkit.errors import SlmkitError
from slmkit.tasks.data import ScoringRow
from slmkit.tasks.scorers import CausalLMScorer, ClassifierScorer, last_positions, right_pad, score_rows

OPSET = 17


class CausalScorerGraph(torch.nn.Module):
    """input_ids, attention_mask (right-padded) -> verbalizer logits at each row's last token."""

    def __init__(self, scorer: CausalLMScorer):
        super().__init__()
        self.decoder = scorer.model.get_decoder()
        head = scorer.model.get_output_embeddings()
        rows = torch.tensor(scorer.token_ids)
        # copy of the K rows: the graph stores K x H weights, not the whole vocabulary
        self.register_buffer("weight", head.weight.detach()[rows].clone())
        bias = getattr(head, "bias", None)
        self.register_buffer("bias", bias.detach()[rows].clone() if bias is not None else torch.zeros(len(rows)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return last_positions(hidden, attention_mask) @ self.weight.T + self.bias


class ClassifierGraph(torch.nn.Module):
    """Tokenizer outputs -> the classification head's logits."""

    def __init__(self, scorer: ClassifierScorer, names: Sequence[str]):
        super().__init__()
        self.model, self.names = scorer.model, list(names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs))).logits


def feeds(scorer, rows: Sequence[ScoringRow]) -> dict[str, np.ndarray]:
    """The graph inputs of ``rows``, exactly as the PyTorch scorer tokenizes them."""
    if isinstance(scorer, CausalLMScorer):
        ids, mask = right_pad([p + s for p, s in map(scorer.encode, rows)], scorer.pad_id)
        return {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    return {k: v.numpy() for k, v in scorer.batch(rows).items()}


def export_scorer(scorer, rows: Sequence[ScoringRow], path: Path, opset: int = OPSET) -> Path:
    """Write ``scorer`` as one ONNX file (weights inside) with dynamic batch and sequence axes.

    ``rows`` (two or more, of different lengths) trace the graph.
    """
    example = {k: torch.from_numpy(v) for k, v in feeds(scorer, rows).items()}
    names = list(example)
    graph = CausalScorerGraph(scorer) if isinstance(scorer, CausalLMScorer) else ClassifierGraph(scorer, names)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter: the dynamo one needs onnxscript, which slmkit does not depend on;
        # torch's notice that it is the legacy one is not the user's to act on
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript", category=DeprecationWarning)
        torch.onnx.export(
            graph.eval(), tuple(example.values()), str(path), input_names=names, output_names=["logits"],
            dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}},
            opset_version=opset, dynamo=False,
        )
    return path


def trace_rows(rows: Sequence[ScoringRow]) -> list[ScoringRow]:
    """The shortest and the longest row: tracing with padding keeps the padding-mask path in the graph."""
    size = lambda r: len(r.context) + len(r.item)
    short, long = min(rows, key=size), max(rows, key=size)
    if size(short) == size(long):
        long = ScoringRow(long.context, long.item + " " + long.item, long.label, long.group, long.source)
    return [short, long]


def score_head_nodes(path: Path) -> list[str]:
    """The graph's last MatMul/Gemm (ONNX nodes are stored in topological order): the score head.

    A sharp scorer's logits are large, and int8 rounding of the head moves them most; its
    weights are a few kilobytes, so keeping them in fp32 costs nothing in size.
    """
    import onnx

    matmuls = [n for n in onnx.load(str(path), load_external_data=False).graph.node
               if n.op_type in ("MatMul", "Gemm")]
    if not matmuls:
        return []
    # onnxruntime's quantizer first splits a Gemm into "<name>_MatMul" + "<name>_Add"
    head = matmuls[-1].name
    return [head, f"{head}_MatMul"] if matmuls[-1].op_type == "Gemm" else [head]


_BLOCK = re.compile(r"/(?:layer|layers|h|block|blocks)\.(\d+)/")


def block_nodes(path: Path) -> dict[int, list[str]]:
    """MatMul/Gemm node names of each numbered transformer block (``.../layer.3/...``), by index."""
    import onnx

    blocks: dict[int, list[str]] = {}
    for n in onnx.load(str(path), load_external_data=False).graph.node:
        if n.op_type in ("MatMul", "Gemm") and (m := _BLOCK.search(n.name)):
            blocks.setdefault(int(m.group(1)), []).append(n.name)
    return dict(sorted(blocks.items()))


def quantize_int8(src: Path, dst: Path, *, keep_head: bool = True, per_channel: bool = True,
                  keep_nodes: Sequence[str] = ()) -> Path:
    """onnxruntime dynamic quantization: int8 weights of MatMul/Gemm, activations quantized per batch.

    Weights get one scale per output channel, and the score head stays fp32 (``keep_head``):
    with one scale per tensor and an int8 head, a student distilled from a fine-tuned teacher
    drifted 0.29 in probability from its PyTorch scores. ``keep_nodes`` (e.g. one block's products
    from ``block_nodes``) stay fp32 too.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep = (score_head_nodes(src) if keep_head else []) + list(keep_nodes)
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                     nodes_to_exclude=keep)
    return Path(dst)


def onnx_score_fn(path: Path, scorer, threads: int | None = None):
    """rows -> [N, K] label logits through an onnxruntime CPU session opened once (for speed runs).

    ``threads`` sets onnxruntime's intra-op pool (default: one per core), to compare backends
    at the same thread count as PyTorch.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}

    def score(rows: Sequence[ScoringRow]) -> torch.Tensor:
        batch = {k: v for k, v in feeds(scorer, rows).items() if k in wanted}
        return torch.from_numpy(session.run(["logits"], batch)[0]).float()

    return score


def onnx_logits(path: Path, scorer, rows: Sequence[ScoringRow], batch_size: int = 16) -> torch.Tensor:
    """[N, K] label logits of ``rows`` from an exported graph, run by onnxruntime on CPU."""
    score = onnx_score_fn(path, scorer)
    return torch.cat([score(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)])


def compare(reference: torch.Tensor, got: torch.Tensor) -> dict[str, float]:
    """Largest differences of label logits and of label probabilities (1-logit heads: sigmoid)."""
    def probs(x):
        return torch.sigmoid(x) if x.shape[-1] == 1 else x.softmax(-1)

    return {
        "max_abs_logit_diff": float((reference - got).abs().max()),
        "max_abs_score_diff": float((probs(reference) - probs(got)).abs().max()),
    }


def export_and_verify(
    scorer, rows: Sequence[ScoringRow], out_dir: Path, *, int8: bool = True,
    fp32_tol: float = 1e-3, int8_tol: float = 0.1,
) -> dict[str, dict]:
    """Export ``scorer.onnx`` (and ``scorer.int8.onnx``), score ``rows`` both ways, fail if they drift.

    The fp32 graph must match PyTorch's probabilities within ``fp32_tol``; int8 is a lossy
    approximation, so its tolerance is a sanity bound and its drift is reported for the report.
    """
    reference = score_rows(scorer, rows)
    fp32 = export_scorer(scorer, trace_rows(rows), Path(out_dir) / "scorer.onnx")
    report = {"fp32": _checked(fp32, "fp32", fp32_tol, reference, scorer, rows)}
    if int8:
        path, kept = quantize_int8(fp32, Path(out_dir) / "scorer.int8.onnx"), []
        try:
            checked = _checked(path, "int8", int8_tol, reference, scorer, rows)
        except SlmkitError:
            if not (blocks := block_nodes(fp32)):
                raise
            # the first block reads the embeddings, whose outliers per-batch activation scales
            # round worst: keeping its products in fp32 (1/L of the weights) cut the largest
            # drift of the quickstart's MiniLM student from 0.17 to 0.06 over 320 rows
            kept = [min(blocks)]
            checked = _checked(quantize_int8(fp32, path, keep_nodes=blocks[kept[0]]), "int8", int8_tol,
                               reference, scorer, rows)
        report["int8"] = {**checked, "fp32_blocks": kept}
    return report


def _checked(path: Path, name: str, tol: float, reference: torch.Tensor, scorer, rows) -> dict:
    diff = compare(reference, onnx_logits(path, scorer, rows))
    if not diff["max_abs_score_diff"] <= tol:  # also catches NaN
        raise SlmkitError(f"{path}: onnxruntime scores differ from PyTorch by {diff['max_abs_score_diff']:.3g} "
                          f"(> {tol}); the exported {name} graph is not trustworthy")
    return {"path": str(path), "bytes": path.stat().st_size, **diff}
