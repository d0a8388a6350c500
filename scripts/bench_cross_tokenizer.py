"""Distillation across tokenizers: ULD and align against sequence-level KD alone, in one run.

    HF_HUB_OFFLINE=1 python scripts/bench_cross_tokenizer.py [--quick] [--steps N] [--out DIR]

Teacher: the embedded SmolLM2-135M-Instruct (byte-level BPE, 49k tokens). Student: a small
random Llama whose tokenizer is a different byte-level BPE (``--vocab`` tokens) trained here
with `tokenizers` on the shipped prompt and prose sets, with the same chat template. One recipe
runs three distill stages from the same student through the real pipeline:

- ``seqkd``: sequence-level KD alone (``data: sequence_kd``, ``kd_weight: 0``): cross-entropy on
  the teacher's answers to ``builtin:prompts``, decoded to text and re-tokenized;
- ``uld`` / ``align``: the same answers, the same steps and batches (the same token budget), plus
  ``loss.cross_tokenizer``'s term against the live teacher.

Measured: each student's perplexity on the teacher's own (greedy) answers to ``builtin:heldout``
prompts, tokenized by the student. The last line is JSON with ``seqkd_ppl``, ``uld_ppl``,
``align_ppl`` and ``best_ratio`` = min(uld_ppl, align_ppl) / seqkd_ppl (target: at most 0.95).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TEACHER = "builtin:smollm2-135m-instruct"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few minutes on 2 CPU cores")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per mode")
    ap.add_argument("--train", type=int, default=None, help="training prompts the teacher answers")
    ap.add_argument("--heldout", type=int, default=None, help="held-out prompts measured")
    ap.add_argument("--new-tokens", type=int, default=None, help="longest teacher answer")
    ap.add_argument("--batch", type=int, default=None, help="sequences per optimizer step")
    ap.add_argument("--vocab", type=int, default=8192, help="student BPE vocabulary")
    ap.add_argument("--kd-weight", type=float, default=1.0, help="weight of the cross-tokenizer term")
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary dir)")
    a = ap.parse_args()
    quick = {"steps": 60, "batch": 4, "train": 64, "heldout": 32, "new_tokens": 32}
    full = {"steps": 400, "batch": 8, "train": 512, "heldout": 106, "new_tokens": 96}
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    return a


# --- the student ---------------------------------------------------------------------------------


def corpus() -> list[str]:
    """Text of the shipped prompt and prose sets (the student tokenizer's training text)."""
    data = ROOT / "slmkit" / "data_files"
    out = []
    for name in ("prompts.jsonl", "prose.jsonl"):
        for line in (data / name).read_text().splitlines():
            row = json.loads(line)
            out += [m["content"] for m in row.get("messages", [])] + ([row["text"]] if "text" in row else [])
    return out


def student_tokenizer(vocab: int, chat_template: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>")
    fast.chat_template = chat_template
    return fast


def make_student(out: Path, tok) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    from slmkit.models import save_model

    cfg = AutoConfig.for_model("llama", vocab_size=len(tok), hidden_size=256, intermediate_size=768,
                               num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                               max_position_embeddings=1024, tie_word_embeddings=True,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    save_model(AutoModelForCausalLM.from_config(cfg).eval(), tok, out)
    return out


# --- the recipe -----------------------------------------------------------------------------------


def recipe(a, work: Path, student: Path) -> Path:
    common = (f"input: student, data: sequence_kd, sequence_kd: {{max_new_tokens: {a.new_tokens}, batch_size: 32}}, "
              f"max_steps: {a.steps}, batch_size: {a.batch}, max_length: 256, optimizer: {{lr: 2.0e-3, warmup_steps: 10}}, "
              f"eval_every: {a.steps}, checkpoint_every: {a.steps}, compile_layers: false")
    text = f"""\
# slmkit run {work}/recipe.yaml    (written by scripts/bench_cross_tokenizer.py)
name: cross-tokenizer-bench
output_dir: {work}/runs
seed: 0
teacher: {{model: {TEACHER}}}
student: {{model: {student}}}
data:
  train: {{path: builtin:prompts, max_samples: {a.train}}}
stages:
  - distill: {{name: seqkd, {common}, loss: {{kd_weight: 0, ce_weight: 1}}}}
  - distill: {{name: uld, {common}, loss: {{cross_tokenizer: uld, kd_weight: {a.kd_weight}, ce_weight: 1}}}}
  - distill: {{name: align, {common}, loss: {{cross_tokenizer: align, kd_weight: {a.kd_weight}, ce_weight: 1}}}}
"""
    path = work / "recipe.yaml"
    path.write_text(text)
    return path


def run_recipe(path: Path) -> float:
    started = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "slmkit", "run", str(path)], cwd=ROOT, text=True,
                       capture_output=True)
    sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
    if r.returncode != 0:
        raise SystemExit(f"slmkit run failed with exit code {r.returncode}")
    return time.perf_counter() - started


# --- the measurement ------------------------------------------------------------------------------


def heldout_answers(a, t_model, t_tok) -> list[list[dict]]:
    """The teacher's greedy answers to the held-out prompts, as conversations."""
    from slmkit.data import load_examples, read_rows
    from slmkit.distill.generate import generate_responses
    from slmkit.recipe import DataSpec

    spec = DataSpec(path="builtin:heldout", max_samples=a.heldout)
    rows, _ = read_rows(spec, ROOT)
    prompts = load_examples(spec, t_tok, base_dir=ROOT)
    out = generate_responses(t_model, prompts, pad_id=t_tok.pad_token_id, eos_id=t_tok.eos_token_id,
                             max_new_tokens=a.new_tokens, do_sample=False, batch_size=32)
    convs = []
    for row, e in zip(rows, out, strict=True):
        msgs = row["messages"]
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=len(msgs))
        answer = t_tok.decode([i for i, m in zip(e.input_ids, e.loss_mask) if m], skip_special_tokens=True)
        convs.append(msgs[:last] + [{"role": "assistant", "content": answer}])
    return convs


@torch.no_grad()
def perplexity(model_dir: Path, tok, convs: list[list[dict]]) -> float:
    """exp(mean cross-entropy) over the answer tokens (and end tag) under the student's own tokenizer."""
    import torch.nn.functional as F

    from slmkit.distill.cross_data import chat_tokens
    from slmkit.models import load_model

    model = load_model(model_dir)
    nll, n = 0.0, 0
    for i, msgs in enumerate(convs):
        t = chat_tokens(tok, msgs, 512, "student", f"heldout:{i + 1}")
        ids, mask = torch.tensor([t.ids]), torch.tensor(t.mask[1:], dtype=torch.bool)
        logits = model(input_ids=ids).logits[0, :-1].float()
        nll += F.cross_entropy(logits[mask], ids[0, 1:][mask], reduction="sum").item()
        n += int(mask.sum())
    return math.exp(nll / n)


def manifest(runs: Path, stage: str) -> dict:
    art = sorted((runs / "cross-tokenizer-bench" / stage).glob("v*"))[-1]
    return {"dir": art, **json.loads((art / "manifest.json").read_text())}


def main() -> None:
    a = parse_args()
    torch.manual_seed(0)
    from slmkit.models import load_ref

    with tempfile.TemporaryDirectory() as tmp:
        work = a.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t_model, t_tok = load_ref(TEACHER)
        s_tok = student_tokenizer(a.vocab, t_tok.chat_template)
        student = make_student(work / "student", s_tok)
        seconds = run_recipe(recipe(a, work, student))
        started = time.perf_counter()
        convs = heldout_answers(a, t_model, t_tok)
        gen_s = time.perf_counter() - started
        result = {"steps": a.steps, "batch_size": a.batch, "train_prompts": a.train, "heldout_prompts": a.heldout,
                  "max_new_tokens": a.new_tokens, "student_vocab": len(s_tok), "teacher_vocab": len(t_tok),
                  "kd_weight": a.kd_weight, "pipeline_seconds": round(seconds, 1),
                  "heldout_generate_seconds": round(gen_s, 1)}
        for stage in ("seqkd", "uld", "align"):
            m = manifest(work / "runs", stage)
            result[f"{stage}_ppl"] = round(perplexity(m["dir"], s_tok, convs), 3)
            d = m["details"]
            result[f"{stage}_train_seconds"] = d.get("train_seconds")
            result[f"{stage}_tokens_trained"] = d.get("tokens_trained")
            if "cross_tokenizer" in d:
                result[f"{stage}_alignment"] = {k: d["cross_tokenizer"].get(k) for k in (
                    "aligned_fraction", "one_to_one_fraction", "shared_tokens", "teacher_mass_on_shared")}
        best = min(result["uld_ppl"], result["align_ppl"])
        result["best_ratio"] = round(best / result["seqkd_ppl"], 4)
        result["target_met"] = result["best_ratio"] <= 0.95
    print(json.dumps(result))


if __name__ == "__main__":
    main()
