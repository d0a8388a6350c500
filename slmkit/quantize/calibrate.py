"""Layer-wise, sequential calibration of a causal LM's linear layers onto a format's grid.

GPTQ's order (Frantar et al. 2022): decoder layer by decoder layer, each layer's linear inputs are
collected from the model with every earlier layer already quantized, so later layers learn to
live with the rounding of the earlier ones. Per layer, one pass over the calibration blocks
accumulates a Hessian per distinct input (q/k/v share one, gate/up another), each linear is
quantized (RTN, GPTQ, or QuantEase on top of GPTQ or RTN), its weights replaced by their
dequantized values, and a second pass produces the next layer's inputs.

Memory is bounded: the hidden states of all calibration blocks live in a file in the work
directory, read and written one batch at a time, so the peak RSS is the model, one batch's
activations and the Hessians, whatever the number of samples. The work directory also makes the
pass resumable: each finished layer's codes are saved, and a rerun continues after the last one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slmkit.errors import InputError
from slmkit.quantize.grids import Grid, QuantizedWeight, rtn
from slmkit.quantize.reconstruction import HessianAccumulator, objective


@dataclass(frozen=True)
class Method:
    """How each linear is quantized on its grid."""

    name: str = "quantease"  # rtn | gptq | quantease
    init: str = "gptq"  # quantease only: start from gptq or rtn
    passes: int = 3  # quantease coordinate-descent passes
    percdamp: float = 0.01  # gptq dampening (share of the mean Hessian diagonal)
    act_order: bool = False  # gptq: columns by decreasing Hessian diagonal (static groups)


@dataclass
class LayerReport:
    name: str
    objective_rtn: float
    objective: float
    objectives: list[float] = field(default_factory=list)  # quantease: before, then after each pass
    seconds: float = 0.0


def calibration_blocks(streams: list[list[int]], samples: int, seq_len: int) -> torch.Tensor:
    """[n, seq_len] token blocks cut from the concatenated examples (at most ``samples`` of them).

    Fixed-length blocks need no padding, so every block sees the same causal mask and positions.
    """
    flat = [t for s in streams for t in s]
    n = min(samples, len(flat) // seq_len)
    if n == 0:
        raise InputError(f"calibration data holds {len(flat)} tokens, fewer than one block of "
                         f"seq_len={seq_len}; add data.calibration rows or lower calibration.seq_len")
    return torch.tensor(flat[: n * seq_len], dtype=torch.long).view(n, seq_len)


def quantize_weight(w: torch.Tensor, h: torch.Tensor | None, grid: Grid, method: Method, name: str
                    ) -> tuple[QuantizedWeight, LayerReport]:
    """One linear's weight on ``grid`` by ``method``; the report holds the objective against RTN's."""
    with torch.autocast("cpu", enabled=False):  # the quantizers' math is fp32 even in a bf16 pass
        return _quantize_weight(w, h, grid, method, name)


def _quantize_weight(w, h, grid: Grid, method: Method, name: str) -> tuple[QuantizedWeight, LayerReport]:
    from slmkit.quantize.gptq import gptq
    from slmkit.quantize.quantease import quantease

    start = time.perf_counter()
    base = rtn(w, grid)
    if method.name == "rtn" or h is None:
        f = objective(w, base.dequantize(), h, torch.float32) if h is not None else float("nan")
        return base, LayerReport(name, f, f, seconds=time.perf_counter() - start)
    f_rtn = objective(w, base.dequantize(), h, torch.float32)
    if method.name == "gptq" or method.init == "gptq":
        qw, _ = gptq(w, h, grid, name=name, percdamp=method.percdamp, act_order=method.act_order)
    else:
        qw = base
    trace: list[float] = []
    if method.name == "quantease":
        qw, stats = quantease(w, h, qw, passes=method.passes, name=name)
        trace = stats.objectives
    f = objective(w, qw.dequantize(), h, torch.float32)
    return qw, LayerReport(name, f_rtn, f, trace, time.perf_counter() - start)


class _Stop(Exception):
    """Raised by the hook that captures the first decoder layer's inputs: the rest is not needed."""


def _layer_inputs(model, batch: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The first decoder layer's hidden-state input and keyword arguments (mask, positions) for a batch."""
    got: dict = {}

    def hook(module, args, kwargs):
        got["hidden"] = args[0] if args else kwargs.pop("hidden_states")
        got["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Stop

    handle = model.model.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(input_ids=batch, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return got["hidden"], got["kwargs"]


class _Activations:
    """Hidden states of every calibration block in a float32 file, read and written a batch at a time."""

    def __init__(self, path: Path, n: int, seq_len: int, width: int):
        self.path, self.shape = path, (n, seq_len, width)
        self.row = seq_len * width * 4

    def write(self, start: int, x: torch.Tensor) -> None:
        mode = "r+b" if self.path.exists() else "wb"
        with self.path.open(mode) as f:
            f.seek(start * self.row)
            f.write(x.detach().float().contiguous().numpy().tobytes())

    def read(self, start: int, count: int) -> torch.Tensor:
        with self.path.open("rb") as f:
            f.seek(start * self.row)
            data = np.frombuffer(f.read(count * self.row), dtype=np.float32)
        return torch.from_numpy(data.copy()).view(count, *self.shape[1:])


def _linears(layer: nn.Module, prefix: str, targets: dict[str, Grid]) -> dict[str, nn.Linear]:
    return {f"{prefix}.{n}": m for n, m in layer.named_modules()
            if isinstance(m, nn.Linear) and f"{prefix}.{n}" in targets}


def _hessians(layer, linears: dict[str, nn.Linear], acts: _Activations, kwargs: dict, batch: int, n: int):
    """One pass over the blocks with hooks on the linears; one accumulator per distinct input tensor."""
    accs: dict[str, HessianAccumulator] = {}
    # id of this batch's input -> (the linear that accumulated it first, the tensor, kept alive so
    # that its id cannot be reused by a later input within the batch)
    seen: dict[int, tuple[str, torch.Tensor]] = {}
    shared: dict[str, str] = {}

    def hook(name):
        def fn(module, args):
            x = args[0]
            if id(x) in seen:  # q/k/v (and gate/up) read the same tensor: one Hessian serves them
                shared[name] = seen[id(x)][0]
                return
            seen[id(x)] = (name, x)
            with torch.autocast("cpu", enabled=False):  # an fp32 sum, even of bf16 activations
                accs.setdefault(name, HessianAccumulator(x.shape[-1], dtype=torch.float32)).add(x.float())
        return fn

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in linears.items()]
    try:
        with torch.no_grad():
            for start in range(0, n, batch):
                seen.clear()
                layer(acts.read(start, min(batch, n - start)), **kwargs)
    finally:
        for h in handles:
            h.remove()
    return {name: accs[shared.get(name, name)].hessian() for name in linears if shared.get(name, name) in accs}


def _forward(layer, src: _Activations, dst: _Activations, kwargs: dict, batch: int, n: int) -> None:
    with torch.no_grad():
        for start in range(0, n, batch):
            out = layer(src.read(start, min(batch, n - start)), **kwargs)
            dst.write(start, out[0] if isinstance(out, tuple) else out)


def _save_layer(work: Path, index: int, done: dict[str, QuantizedWeight], reports: list[LayerReport]) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for name, qw in done.items():
        tensors[f"{name}.q"], tensors[f"{name}.scale"] = qw.q.contiguous(), qw.scale.contiguous()
        if qw.zero is not None:
            tensors[f"{name}.zero"] = qw.zero.contiguous()
    save_file(tensors, str(work / f"layer-{index:03d}.safetensors"))
    (work / f"layer-{index:03d}.json").write_text(json.dumps([r.__dict__ for r in reports]))


def _load_layer(work: Path, index: int, targets: dict[str, Grid]) -> tuple[dict, list[LayerReport]] | None:
    from safetensors.torch import load_file

    path = work / f"layer-{index:03d}.safetensors"
    if not path.exists() or not (work / f"layer-{index:03d}.json").exists():
        return None
    t = load_file(str(path))
    names = sorted({k.rsplit(".", 1)[0] for k in t})
    done = {n: QuantizedWeight(t[f"{n}.q"], t[f"{n}.scale"], t.get(f"{n}.zero"), targets[n]) for n in names}
    reports = [LayerReport(**r) for r in json.loads((work / f"layer-{index:03d}.json").read_text())]
    return done, reports


def _quantize_layer(layer, prefix, targets, method, acts, kwargs, batch, n) -> tuple[dict, list[LayerReport]]:
    linears = _linears(layer, prefix, targets)
    hessians = _hessians(layer, linears, acts, kwargs, batch, n)
    done, reports = {}, []
    for name, m in linears.items():
        qw, report = quantize_weight(m.weight.data.float(), hessians.get(name), targets[name], method, name)
        done[name], reports = qw, reports + [report]
    return done, reports


def _apply(model: nn.Module, done: dict[str, QuantizedWeight]) -> None:
    modules = dict(model.named_modules())
    for name, qw in done.items():
        w = modules[name].weight
        w.data.copy_(qw.dequantize().to(w.dtype))


def _lm_head(model, targets: dict[str, Grid], method: Method, acts: _Activations, batch: int, n: int):
    """The output projection, on the final norm of the last layer's outputs."""
    head = model.get_output_embeddings()
    name = next((k for k, m in model.named_modules() if m is head), "lm_head")
    if name not in targets:
        return {}, []
    acc = HessianAccumulator(head.in_features, dtype=torch.float32)
    with torch.no_grad():
        for start in range(0, n, batch):
            x = model.model.norm(acts.read(start, min(batch, n - start)))
            with torch.autocast("cpu", enabled=False):
                acc.add(x.float())
    qw, report = quantize_weight(head.weight.data.float(), acc.hessian(), targets[name], method, name)
    return {name: qw}, [report]


def calibrate(model, blocks: torch.Tensor, targets: dict[str, Grid], method: Method, work: Path, *,
              batch: int = 8, log: Callable[[str], None] = lambda _: None, dtype: torch.dtype = torch.float32
              ) -> tuple[dict[str, QuantizedWeight], list[LayerReport]]:
    """Quantize every linear named in ``targets`` (module name -> grid) of ``model`` in place.

    Returns the codes of each and a per-linear report. ``work`` keeps the activation files and
    each finished layer's codes: a rerun with the same inputs continues where a crash stopped.
    ``dtype`` bfloat16 runs the forward passes under autocast (the Hessians are still fp32 sums).
    """
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        return _calibrate(model, blocks, targets, method, work, batch, log)


def _calibrate(model, blocks, targets, method: Method, work: Path, batch: int, log):
    work.mkdir(parents=True, exist_ok=True)
    model.eval()
    n, seq_len = blocks.shape
    layers = model.model.layers
    acts = [_Activations(work / f"acts-{i}.f32", n, seq_len, model.config.hidden_size) for i in (0, 1)]
    kwargs = _capture(model, blocks, acts[0], batch, work)
    done: dict[str, QuantizedWeight] = {}
    reports: list[LayerReport] = []
    for i, layer in enumerate(layers):
        prefix = f"model.layers.{i}"
        src, dst = acts[i % 2], acts[(i + 1) % 2]
        saved = _load_layer(work, i, targets)
        if saved is None:
            started = time.perf_counter()
            layer_done, layer_reports = _quantize_layer(layer, prefix, targets, method, src, kwargs, batch, n)
            _apply(model, layer_done)
            _forward(layer, src, dst, kwargs, batch, n)
            _save_layer(work, i, layer_done, layer_reports)  # after the forward: dst is complete
            log(f"calibrate: layer {i + 1}/{len(layers)} ({len(layer_done)} linears, "
                f"{time.perf_counter() - started:.1f}s)")
        else:
            layer_done, layer_reports = saved
            _apply(model, layer_done)
        done.update(layer_done)
        reports += layer_reports
    head_done, head_reports = _lm_head(model, targets, method, acts[len(layers) % 2], batch, n)
    _apply(model, head_done)
    return {**done, **head_done}, reports + head_reports


def _capture(model, blocks: torch.Tensor, acts: _Activations, batch: int, work: Path) -> dict:
    """Write the first layer's inputs for every block; the keyword arguments of one full batch.

    Every block has the same length and no padding, so the mask and rotary positions of a full
    batch serve every batch (the last, shorter one broadcasts them or recomputes them, below).
    """
    marker = work / "acts-0.done"
    _, kwargs = _layer_inputs(model, blocks[:batch])
    if not marker.exists():  # a resumed run has them already
        for start in range(0, len(blocks), batch):
            acts.write(start, _layer_inputs(model, blocks[start : start + batch])[0])
        marker.touch()
    return _batch_agnostic(kwargs)


def _batch_agnostic(kwargs: dict) -> dict:
    """Keep the arguments every batch shares, with a batch dimension of 1 so they broadcast."""
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] > 1:
            v = v[:1]
        elif isinstance(v, tuple) and all(isinstance(t, torch.Tensor) for t in v):
            v = tuple(t[:1] if t.dim() > 0 and t.shape[0] > 1 else t for t in v)
        out[k] = v
    return out


def method_of(cfg) -> Method:
    """The quantizer settings of a recipe's ``calibration`` section (CalibrationConfig)."""
    return Method(cfg.method, cfg.init, cfg.passes, cfg.percdamp, cfg.act_order)


def calibrate_dir(model_dir: Path, streams: list[list[int]], targets: dict[str, Grid], cfg, work: Path,
                  log: Callable[[str], None] = lambda _: None) -> tuple[dict[str, QuantizedWeight], dict]:
    """Calibrate the fp32 model at ``model_dir`` on token ``streams``; codes and a manifest summary."""
    from slmkit.models import load_model

    started = time.perf_counter()
    blocks = calibration_blocks(streams, cfg.samples, cfg.seq_len)
    model = load_model(model_dir, "float32", "cpu")
    log(f"calibrate: {cfg.method} on {blocks.shape[0]} x {blocks.shape[1]} tokens, {len(targets)} linears")
    with torch.inference_mode(False), torch.no_grad():
        codes, reports = calibrate(model, blocks, targets, method_of(cfg), work, batch=cfg.batch_size, log=log,
                                   dtype=getattr(torch, cfg.dtype))
    ratios = [r.objective / r.objective_rtn for r in reports if r.objective_rtn > 0]
    summary = {"method": cfg.method, "blocks": int(blocks.shape[0]), "seq_len": int(blocks.shape[1]),
               "tokens": int(blocks.numel()), "linears": len(codes),
               "mean_objective_vs_rtn": float(np.mean(ratios)) if ratios else None,
               "seconds": round(time.perf_counter() - started, 1),
               "layers": [r.__dict__ for r in reports]}
    return codes, summary


class Calibrator:
    """What a stage hands the writers for calibrated rounding: its calibration data and work directory.

    The token streams are read only when a writer asks (rtn exports never load the data), and each
    target format calibrates in its own folder of the work directory, so a crashed export resumes.
    """

    def __init__(self, streams: Callable[[], list[list[int]]], work: Path, log: Callable[[str], None]):
        self._streams, self._cache, self.work, self.log = streams, None, Path(work), log

    def streams(self) -> list[list[int]]:
        if self._cache is None:
            self._cache = self._streams()
            if not any(self._cache):
                raise InputError("calibration data (data.calibration, or data.train as its fallback) holds no "
                                 "tokens; give rows with text, or use calibration: rtn")
        return self._cache

    def run(self, model_dir: Path, targets: dict[str, Grid], cfg, tag: str):
        return calibrate_dir(Path(model_dir), self.streams(), targets, cfg, self.work / f"calibrate-{tag}", self.log)
