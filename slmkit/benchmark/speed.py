"""Speed: time requests on every backend, summarise them honestly, record the machine.

Per (model, backend): load time, peak memory, and per batch size the prefill and decode rates,
time to first token and request latency percentiles; then the throughput of N concurrent
batch-1 requests. Warm-up requests run first; each figure is the median of ``repeats`` timed
requests with its min/max spread. With ``isolate`` every (model, backend) runs in a
fresh process (``python -m slmkit.benchmark.speed SPEC OUT``) so peak RSS is that model's own
and an out-of-memory kill costs one row.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from slmkit.machine import cpu_info, hardware_info, library_versions  # noqa: F401  (re-exported: one home for machine facts)
from slmkit.runtimes import BatchDoesNotFit, Variant, open_session

# ---------------------------------------------------------------- pure summaries


def summarize(values: list[float]) -> dict:
    """Median with its spread (min, max) and the raw runs, so a reader can judge the noise."""
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    return {
        "median": float(np.median(a)),
        "min": float(a.min()),
        "max": float(a.max()),
        "runs": [float(v) for v in a],
    }


def latency_percentiles(values: list[float]) -> dict:
    """p50/p95/p99 by linear interpolation; with few repeats p99 is close to the max, and says so."""
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    out = {f"p{q}": float(np.percentile(a, q)) for q in (50, 95, 99)}
    return {**out, "n": int(a.size), **{k: v for k, v in summarize(values).items() if k != "median"}}


def request_rates(batch: int, prompt_tokens: int, new_tokens: int, t: dict) -> dict:
    """Rates of one timed request: prefill counts prompt tokens, decode the tokens after the first."""
    return {
        "prefill_tok_s": batch * prompt_tokens / t["ttft_s"],
        "decode_tok_s": batch * (new_tokens - 1) / t["decode_s"],
        "ttft_ms": 1000 * t["ttft_s"],
        "latency_ms": 1000 * t["total_s"],
    }


def estimate_request_bytes(dims: dict, batch: int, prompt_tokens: int, new_tokens: int) -> int:
    """A lower-bound estimate of the memory one request needs beyond the weights.

    KV cache for the whole sequence, the prefill's widest activations and attention scores, and
    the next-token logits. It is what decides "does not fit" before a run can be killed for it.
    """
    seq = prompt_tokens + new_tokens
    kv = 2 * dims["layers"] * batch * seq * dims["kv_heads"] * dims["head_dim"] * dims["dtype_bytes"]
    act = batch * prompt_tokens * (4 * dims["hidden"] + 3 * dims["intermediate"]) * 4
    scores = batch * dims["heads"] * prompt_tokens * prompt_tokens * 4
    return int(kv + act + scores + batch * dims["vocab"] * 4)


def available_bytes(device: str) -> int:
    import psutil

    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    return int(psutil.virtual_memory().available)


# ---------------------------------------------------------------- timing harness


class PeakRSS:
    """Samples this process's RSS every few milliseconds in a thread and keeps the peak."""

    def __init__(self, interval_s: float = 0.005):
        import psutil

        self.proc, self.interval, self.peak = psutil.Process(), interval_s, 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def time_request(session, batch, new_tokens: int) -> dict:
    """One request: prefill plus first token (TTFT), then new_tokens - 1 decode steps."""
    if getattr(session, "whole_requests", False):
        return session.request(batch, new_tokens)
    t0 = time.perf_counter()
    state = session.start(batch)
    t1 = time.perf_counter()
    for _ in range(new_tokens - 1):
        session.step(state)
    t2 = time.perf_counter()
    return {"ttft_s": t1 - t0, "decode_s": t2 - t1, "total_s": t2 - t0}


def _skip(batch_size: int, reason: str, status: str = "skipped") -> dict:
    return {"batch_size": batch_size, "status": status, "reason": reason}


def measure_batch(session, batch_size: int, prompt: list[int], cfg, device: str) -> dict:
    """Warm-up, then ``repeats`` timed requests at one batch size; a batch that does not fit is skipped."""
    dims = getattr(session, "dims", None)
    if dims:
        need, have = (
            estimate_request_bytes(dims, batch_size, len(prompt), cfg.new_tokens),
            available_bytes(device),
        )
        if need > 0.9 * have:
            return _skip(
                batch_size,
                f"does not fit in memory: batch {batch_size} needs about {need / 2**30:.1f} "
                f"GiB for KV cache and activations, {have / 2**30:.1f} GiB available",
            )
    batch = [list(prompt)] * batch_size
    try:
        for _ in range(cfg.warmup):
            time_request(session, batch, cfg.new_tokens)
        runs = [
            request_rates(
                batch_size, len(prompt), cfg.new_tokens, time_request(session, batch, cfg.new_tokens)
            )
            for _ in range(cfg.repeats)
        ]
    except BatchDoesNotFit as e:
        return _skip(batch_size, str(e))
    except MemoryError:
        return _skip(batch_size, f"out of memory at batch {batch_size}")
    except RuntimeError as e:  # torch.OutOfMemoryError is a RuntimeError; so are allocator failures
        if "memory" not in str(e).lower() and "alloc" not in str(e).lower():
            raise
        return _skip(batch_size, f"out of memory at batch {batch_size}: {str(e).splitlines()[0]}")
    row = {"batch_size": batch_size, "status": "ok", "reason": None}
    for key in ("prefill_tok_s", "decode_tok_s", "ttft_ms"):
        row[key] = summarize([r[key] for r in runs])
    row["latency_ms"] = latency_percentiles([r["latency_ms"] for r in runs])
    return row


def measure_concurrency(session, prompt: list[int], cfg) -> dict:
    """N batch-1 requests at once from N threads (each its own cache): generated tokens per second."""
    n = cfg.concurrency
    if not getattr(session, "serves_concurrently", True):
        return {
            "requests": n,
            "status": "skipped",
            "reason": "this backend's session serves one request at a time",
        }
    walls, latencies = [], []
    for _ in range(cfg.repeats):
        barrier, lat = threading.Barrier(n + 1), [0.0] * n

        def worker(i: int, barrier=barrier, lat=lat) -> None:
            barrier.wait()
            lat[i] = time_request(session, [list(prompt)], cfg.new_tokens)["total_s"] * 1000

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        walls.append(time.perf_counter() - t0)
        latencies += lat
    return {
        "requests": n,
        "status": "ok",
        "reason": None,
        "throughput_tok_s": summarize([n * cfg.new_tokens / w for w in walls]),
        "latency_ms": latency_percentiles(latencies),
    }


def _measure_loaded(session, variant: Variant, backend: str, prompt: list[int], cfg, device: str) -> dict:
    batches = [measure_batch(session, b, prompt, cfg, device) for b in cfg.batch_sizes]
    conc = None
    if cfg.concurrency > 0:
        try:
            conc = measure_concurrency(session, prompt, cfg)
        except (MemoryError, RuntimeError) as e:
            conc = {"requests": cfg.concurrency, "status": "failed", "reason": str(e).splitlines()[0]}
    return {"batches": batches, "concurrency": conc}


def measure_backend(variant: Variant, backend: str, prompt: list[int], cfg) -> dict:
    """Every speed figure of one model on one backend; load failures become a failed entry."""
    import torch

    from slmkit.runtimes.pytorch import resolve_device

    device = (
        resolve_device(cfg.device).type
        if backend.startswith("torch")
        else ("cuda" if backend == "vllm" else "cpu")
    )
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        entry = _measure_with_memory(variant, backend, prompt, cfg, device)
    finally:
        torch.set_num_threads(threads_before)  # the caller's process keeps its own setting
    # not ru_maxrss: Linux carries the high-water mark across fork+exec, so a child started by a
    # large parent would report the parent's RSS; the sampled peak is this model's own
    return entry


def _measure_with_memory(variant: Variant, backend: str, prompt: list[int], cfg, device: str) -> dict:
    import torch

    entry = {
        "model": variant.model_id,
        "format": variant.format,
        "backend": backend,
        "path": str(variant.path),
        "device": device,
        "threads": torch.get_num_threads() if backend.startswith("torch") else cfg.threads,
    }
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        entry["rss_before_load_mb"] = rss.peak / 2**20
        try:
            t0 = time.perf_counter()
            session = _open(variant, backend, prompt, cfg, device)
            entry["load_s"] = time.perf_counter() - t0
        except Exception as e:  # a corrupted or incomplete artifact: say so, keep the report going
            return {
                **entry,
                "status": "failed",
                "reason": f"could not load {variant.path}: {type(e).__name__}: {e}",
                "batches": [],
            }
        entry.update(_measure_loaded(session, variant, backend, prompt, cfg, device))
    entry["peak_rss_mb"], entry["rss_source"] = rss.peak / 2**20, "sampled"
    if device == "cuda":
        entry["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    ok = any(b["status"] == "ok" for b in entry["batches"])
    entry["status"], entry["reason"] = ("ok", None) if ok else ("skipped", "no batch size could be measured")
    return entry


def _open(variant: Variant, backend: str, prompt: list[int], cfg, device: str):
    return open_session(
        variant, backend, cfg.new_tokens, len(prompt) + cfg.new_tokens + 8, device, cfg.threads
    )


def measure_isolated(
    variant: Variant, backend: str, prompt: list[int], cfg, scratch: Path, timeout_s: float | None = None
) -> dict:
    """``measure_backend`` in a fresh Python process; a crash or kill becomes a failed entry."""
    scratch.mkdir(parents=True, exist_ok=True)
    tag = f"{variant.model_id.replace('/', '_')}-{variant.format}-{backend}"
    spec, out = scratch / f"{tag}.spec.json", scratch / f"{tag}.out.json"
    spec.write_text(
        json.dumps(
            {
                "variant": {
                    "model_id": variant.model_id,
                    "format": variant.format,
                    "path": str(variant.path),
                },
                "backend": backend,
                "prompt": prompt,
                "speed": cfg.model_dump(),
            }
        )
    )
    out.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "slmkit.benchmark.speed", str(spec), str(out)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if proc.returncode == 0 and out.exists():
        return json.loads(out.read_text())
    why = "killed (likely out of memory)" if proc.returncode in (-9, 137) else f"exit code {proc.returncode}"
    tail = proc.stderr.strip().splitlines()[-1:] or [""]
    return {
        "model": variant.model_id,
        "format": variant.format,
        "backend": backend,
        "path": str(variant.path),
        "status": "failed",
        "reason": f"the measuring process died: {why}. {tail[0]}".strip(),
        "batches": [],
    }


def _main(spec_path: str, out_path: str) -> None:
    from slmkit.benchmark.config import SpeedConfig

    spec = json.loads(Path(spec_path).read_text())
    v = spec["variant"]
    variant = Variant(v["model_id"], v["format"], Path(v["path"]))
    try:
        entry = measure_backend(
            variant, spec["backend"], spec["prompt"], SpeedConfig(**spec["speed"])
        )
    except Exception as e:
        entry = {
            "model": variant.model_id,
            "format": variant.format,
            "backend": spec["backend"],
            "path": str(variant.path),
            "status": "failed",
            "reason": f"{type(e).__name__}: {e}",
            "batches": [],
            "traceback": traceback.format_exc(),
        }
    Path(out_path).write_text(json.dumps(entry))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
