#!/usr/bin/env bash
# Every CUDA path of slmkit on one GPU, through the real CLI, one JSON line per path on stdout:
#
#   bash scripts/gpu_check.sh            # about 8 minutes on one GPU (a target: see docs/performance.md)
#
# Needs a CUDA build of torch and the GPU extras, e.g.
#   make setup TORCH='torch==2.13.0+cu128' && .venv/bin/pip install -e '.[gpu,torchao]'
#
# Paths (each line: {"path", "status": "ok" | "error", "seconds", "reason", "figures"}):
#   distill_bf16_compiled     depth prune to 16 layers, then bf16 distillation with compiled decoder layers
#   distill_fsdp_1proc        the same distill stage under `accelerate launch` with FSDP, one process
#   llmcompressor_fp8_vllm    llm-compressor FP8_DYNAMIC, verified, benchmarked in vLLM, served by `vllm serve`
#   llmcompressor_w4a16_vllm  llm-compressor W4A16 (GPTQ on calibration data), the same three
#   torchao_int4              torchao int4_weight_only (tinygemm kernels), verified in transformers
#   ranking_scorer_cuda       recipes/ranking-quickstart.yaml (finetune, score distillation, export,
#                             benchmark) with fewer steps, on CUDA
# Logs and artifacts stay in $SLMKIT_GPU_CHECK_DIR (default: a new temporary directory). Exit 0 when
# every path is ok, 1 otherwise. Without a CUDA device every path is an error line saying so.
# `bash scripts/gpu_check.sh --validate` only writes the recipes and validates them (no GPU needed).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=${SLMKIT_GPU_CHECK_DIR:-$(mktemp -d -t slmkit-gpu-check.XXXXXX)}
mkdir -p "$WORK"
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
PATHS=(distill_bf16_compiled distill_fsdp_1proc llmcompressor_fp8_vllm llmcompressor_w4a16_vllm torchao_int4
       ranking_scorer_cuda)
FAILED=0

# ------------------------------------------------------------------ one JSON line per path

cat > "$WORK/report.py" <<'PYEOF'
"""Print a path's JSON line: the figures its artifacts' manifests and results.json recorded."""
import json, re, sys
from pathlib import Path

def latest(run_dir, stage):
    versions = sorted((Path(run_dir) / stage).glob("v*/manifest.json"), key=lambda p: int(p.parent.name[1:]))
    return json.loads(versions[-1].read_text()) if versions else None

def numbers(d, keys=None):
    return {k: v for k, v in (d or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and (keys is None or k in keys)}

def speed_rows(bench_dir):
    found = sorted(Path(bench_dir).glob("v*/results.json"), key=lambda p: int(p.parent.name[1:]))
    if not found:
        return {}
    r = json.loads(found[-1].read_text())
    out = {}
    for e in r.get("speed", []):
        key = f"{e['model']}:{e['backend']}"
        if e["status"] != "ok":
            out[key] = {"status": e["status"], "reason": e.get("reason")}
            continue
        for b in e.get("batches", []):
            if b.get("status") == "ok":
                out[f"{key}:bs{b['batch_size']}_decode_tok_s"] = b["decode_tok_s"]["median"]
            else:
                out[f"{key}:bs{b['batch_size']}"] = b.get("reason")
        if e.get("peak_rss_mb") is not None:
            out[f"{key}:gpu_peak_mb"] = e.get("gpu_peak_mb")
    for k, v in (r.get("headline") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"headline:{k}"] = v
    if "scoring_speed" in r:
        out["scoring_speed"] = r["scoring_speed"]
    return out

def main():
    name, rc, seconds, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) / 1000, Path(sys.argv[4])
    figures = {}
    for spec in sys.argv[5:]:  # kind=path: stage=<run dir>/<stage>, bench=<run dir>/<stage>, json=<file>
        kind, _, path = spec.partition("=")
        if kind == "stage":
            m = latest(Path(path).parent, Path(path).name)
            if m:
                d = m.get("details") or {}
                figures[Path(path).name] = {**numbers(m.get("metrics")),
                    **numbers(d, {"trained_tokens_per_s", "train_seconds", "tokens_trained", "steps", "size_after_bytes",
                                  "compression"}),
                    **({"verified_in": d["verification"].get("runtime")} if isinstance(d.get("verification"), dict) else {})}
        elif kind == "bench":
            figures[Path(path).name] = speed_rows(path)
        elif kind == "json" and Path(path).is_file():
            figures[Path(path).stem] = json.loads(Path(path).read_text())
    reason = None
    if rc != 0:
        text = log.read_text(errors="replace") if log.is_file() else ""
        lines = [l for l in text.splitlines() if l.strip()]
        errors = [l for l in lines if re.search(r"(^error:|Error|Traceback|FAIL|Killed)", l)]
        tail = (errors or lines or ["no output"])[-1].strip()
        reason = f"exit {rc}" + (" (timed out)" if rc in (124, 137) else "") + f": {tail[:400]} (log: {log})"
    print(json.dumps({"path": name, "status": "ok" if rc == 0 else "error", "seconds": round(seconds, 1),
                      "reason": reason, "figures": figures}), flush=True)

main()
PYEOF

emit_error() {  # path, reason
  "$PY" -c 'import json,sys; print(json.dumps({"path": sys.argv[1], "status": "error", "seconds": 0.0,
"reason": sys.argv[2], "figures": {}}))' "$1" "$2" 2>/dev/null \
    || printf '{"path": "%s", "status": "error", "seconds": 0.0, "reason": "%s", "figures": {}}\n' "$1" "$2"
  FAILED=1
}

run_path() {  # path, timeout seconds, report specs (space separated), command...
  local name=$1 limit=$2 specs=$3; shift 3
  local log="$WORK/$name.log" start rc
  start=$(date +%s%3N)
  timeout --kill-after=20 "$limit" "$@" >"$log" 2>&1
  rc=$?
  # shellcheck disable=SC2086
  "$PY" "$WORK/report.py" "$name" "$rc" "$(( $(date +%s%3N) - start ))" "$log" $specs || FAILED=1
  [ "$rc" -eq 0 ] || FAILED=1
}

# ------------------------------------------------------------------ before anything runs

if [ ! -x "$PY" ]; then
  for p in "${PATHS[@]}"; do emit_error "$p" "no Python interpreter at $PY (run make setup, or set PYTHON)"; done
  exit 1
fi
missing() { "$PY" -c "import importlib.util,sys; sys.exit(0 if importlib.util.find_spec('$1') is None else 1)"; }

# ------------------------------------------------------------------ recipes

R="$WORK/runs"
cat > "$WORK/distill.yaml" <<EOF
# bash scripts/gpu_check.sh (the distill paths)
name: gpu-distill
output_dir: $R
seed: 0
teacher: {model: builtin:smollm2-135m-instruct, dtype: float32, device: cuda}
data:
  train: {path: builtin:prompts, max_samples: 256, max_length: 256}
  eval: {path: builtin:heldout, max_samples: 16, max_length: 256}
stages:
  - prune: {method: depth, keep_layers: 16, calibration_samples: 32, calibration_max_length: 256, eval_samples: 0}
  - distill: {precision: bf16, compile_layers: true, max_steps: 40, batch_size: 16, eval_every: 40,
              eval_examples: 16, checkpoint_every: 40}
EOF

cat > "$WORK/fsdp_1gpu.yaml" <<EOF
# configs/accelerate/fsdp_8gpu.yaml with one process
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
num_machines: 1
num_processes: 1
machine_rank: 0
mixed_precision: bf16
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_cpu_ram_efficient_loading: true
  fsdp_offload_params: false
  fsdp_reshard_after_forward: true
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_activation_checkpointing: false
EOF

cat > "$WORK/llmc.yaml" <<EOF
# bash scripts/gpu_check.sh (the llm-compressor paths)
name: gpu-llmc
output_dir: $R
seed: 0
teacher: {model: builtin:smollm2-135m-instruct, dtype: bfloat16, device: cuda}
data:
  calibration: {path: builtin:prompts, max_samples: 64, max_length: 256}
  eval: {path: builtin:heldout, max_samples: 16, max_length: 256}
stages:
  - quantize: {name: fp8, input: teacher, method: llmcompressor, scheme: FP8_DYNAMIC}
  - quantize: {name: w4a16, input: teacher, method: llmcompressor, scheme: W4A16, calibration_samples: 32}
  - benchmark:
      models: [fp8, w4a16]
      quality: [perplexity]
      primary_metric: perplexity
      eval_samples: 16
      general_text: null
      speed: {backends: [vllm], batch_sizes: [1, 8], warmup: 1, repeats: 2, new_tokens: 32, concurrency: 0}
EOF

cat > "$WORK/torchao.yaml" <<EOF
# bash scripts/gpu_check.sh (torchao int4)
name: gpu-torchao
output_dir: $R
seed: 0
teacher: {model: builtin:smollm2-135m-instruct, dtype: bfloat16, device: cuda}
stages:
  - quantize: {name: int4, input: teacher, method: torchao, scheme: int4_weight_only, group_size: 128}
EOF

serve() {  # artifact dir, port, output json: start vllm serve, one completion, stop it
  local dir=$1 port=$2 out=$3 pid
  "$PY" -m vllm.entrypoints.openai.api_server --model "$dir" --port "$port" --max-model-len 1024 \
    --gpu-memory-utilization 0.3 --enforce-eager >"$out.log" 2>&1 &
  pid=$!
  "$PY" - "$port" "$out" "$dir" <<'PYEOF'
import json, sys, time, urllib.request
port, out, model = sys.argv[1], sys.argv[2], sys.argv[3]
start = time.time()
while True:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        break
    except Exception:
        if time.time() - start > 240:
            sys.exit("vllm serve did not answer /health within 240 s")
        time.sleep(2)
ready = time.time() - start
body = json.dumps({"model": model, "prompt": "def fibonacci(n):", "max_tokens": 32, "temperature": 0}).encode()
t0 = time.time()
req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body, {"Content-Type": "application/json"})
answer = json.load(urllib.request.urlopen(req, timeout=60))
text = answer["choices"][0]["text"]
if not text.strip():
    sys.exit("vllm serve answered an empty completion")
json.dump({"ready_s": round(ready, 1), "completion_s": round(time.time() - t0, 2),
           "completion_tokens": answer.get("usage", {}).get("completion_tokens"), "text": text[:80]}, open(out, "w"))
PYEOF
  local rc=$?
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  return $rc
}

llmc_path() {  # the quantize stages and the benchmark once, then serve one artifact per path
  local scheme=$1 stage=$2 port=$3
  [ -d "$R/gpu-llmc/benchmark" ] || "$PY" -m slmkit run "$WORK/llmc.yaml" || return $?
  serve "$(ls -d "$R/gpu-llmc/$stage"/v* | sort -V | tail -1)" "$port" "$WORK/serve_$stage.json"
}

# ------------------------------------------------------------------ the recipes are valid (no GPU needed)

for recipe in distill llmc torchao; do
  if ! problems=$("$PY" -m slmkit validate "$WORK/$recipe.yaml" 2>&1); then
    for p in "${PATHS[@]}"; do emit_error "$p" "generated recipe $WORK/$recipe.yaml is invalid: $problems"; done
    exit 1
  fi
done
if [ "${1:-}" = "--validate" ]; then
  echo "gpu_check: the generated recipes in $WORK are valid" >&2
  exit 0
fi

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  for p in "${PATHS[@]}"; do
    emit_error "$p" "no CUDA device: nvidia-smi finds no NVIDIA GPU or driver on $(hostname); run this on a GPU machine"
  done
  exit 1
fi
CUDA_REASON=$("$PY" - <<'PYEOF' 2>&1
import torch
if not torch.cuda.is_available():
    print(f"no CUDA device: torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}) sees no GPU; "
          "run this on a GPU machine with a CUDA build of torch, e.g. make setup TORCH='torch==2.13.0+cu128'")
PYEOF
)
if [ -n "$CUDA_REASON" ]; then
  for p in "${PATHS[@]}"; do emit_error "$p" "$CUDA_REASON"; done
  exit 1
fi
# ------------------------------------------------------------------ the paths

run_path distill_bf16_compiled 150 "stage=$R/gpu-distill/prune stage=$R/gpu-distill/distill" \
  "$PY" -m slmkit run "$WORK/distill.yaml"

run_path distill_fsdp_1proc 120 "stage=$R/gpu-distill/distill" \
  "$PY" -m accelerate.commands.launch --config_file "$WORK/fsdp_1gpu.yaml" -m slmkit distill "$WORK/distill.yaml" \
  --force --set stages.distill.compile_layers=false --set stages.distill.max_steps=20

if missing llmcompressor || missing vllm; then
  emit_error llmcompressor_fp8_vllm "llmcompressor and vllm are not both installed (pip install -e '.[gpu]')"
  emit_error llmcompressor_w4a16_vllm "llmcompressor and vllm are not both installed (pip install -e '.[gpu]')"
else
  export -f serve llmc_path; export PY R WORK
  run_path llmcompressor_fp8_vllm 270 "stage=$R/gpu-llmc/fp8 bench=$R/gpu-llmc/benchmark json=$WORK/serve_fp8.json" \
    bash -c 'llmc_path FP8_DYNAMIC fp8 8011'
  run_path llmcompressor_w4a16_vllm 120 "stage=$R/gpu-llmc/w4a16 bench=$R/gpu-llmc/benchmark json=$WORK/serve_w4a16.json" \
    bash -c 'llmc_path W4A16 w4a16 8012'
fi

if missing torchao; then
  emit_error torchao_int4 "torchao is not installed (pip install -e '.[torchao]')"
else
  run_path torchao_int4 90 "stage=$R/gpu-torchao/int4" "$PY" -m slmkit run "$WORK/torchao.yaml"
fi

run_path ranking_scorer_cuda 150 "stage=$R/ranking-quickstart/finetune stage=$R/ranking-quickstart/distill bench=$R/ranking-quickstart/benchmark" \
  "$PY" -m slmkit run recipes/ranking-quickstart.yaml --output-dir "$R" --set teacher.device=cuda \
  --set stages.finetune.max_steps=10 --set stages.distill.max_steps=30 --set "stages.benchmark.speed.batch_sizes=[1, 16]" \
  --set "stages.benchmark.gates={}"

exit $FAILED
