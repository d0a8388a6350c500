"""lm-eval offline: a task of our own (local YAML over a local jsonl) on a tiny model, scored by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slmkit.benchmark.lm_eval_hook import run_tasks, task_scores

pytest.importorskip("lm_eval")

DOCS = [
    {"question": "The capital of France is", "choices": ["Paris", "a small town in the north", "Berlin"], "answer": 0},
    {"question": "2 + 2 =", "choices": ["4", "five", "twenty-two and a half"], "answer": 2},
    {"question": "Python lists are", "choices": ["mutable sequences of items", "immutable"], "answer": 1},
    {"question": "def add(a, b): return", "choices": ["a + b", "a - b", "None"], "answer": 0},
    {"question": "The sky is", "choices": ["blue", "green", "made of cheese"], "answer": 1},
    {"question": "Water boils at", "choices": ["100 degrees Celsius", "0 degrees", "sea level only"], "answer": 2},
]

TASK = """\
task: slmkit_tiny_qa
dataset_path: json
dataset_kwargs:
  data_files:
    test: data/qa.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - metric: acc
"""


def write_task(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "data" / "qa.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (root / "qa.yaml").write_text(TASK)
    return root


def hand_accuracy(model_dir: Path, docs: list[dict]) -> float:
    """lm-eval's multiple-choice accuracy written out: the choice with the highest summed log-probability
    of its tokens after the question (target delimiter " ", the whole string tokenized, then split)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    right = 0
    for doc in docs:
        context = tok.encode(doc["question"])
        scores = []
        for choice in doc["choices"]:
            whole = tok.encode(doc["question"] + " " + choice)
            assert whole[: len(context)] == context
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([whole[:-1]])).logits[0], -1)
            scores.append(sum(float(logp[i - 1, whole[i]]) for i in range(len(context), len(whole))))
        right += int(max(range(len(scores)), key=scores.__getitem__) == doc["answer"])
    return right / len(docs)


def test_a_local_task_scores_what_a_hand_computation_gives(tmp_path, tiny_llama_dir, monkeypatch):
    tasks = write_task(tmp_path / "tasks")
    monkeypatch.chdir(tmp_path)  # the data file is found relative to the task YAML, not the working dir
    figures = run_tasks(tiny_llama_dir, ["slmkit_tiny_qa"], tasks)
    expected = hand_accuracy(tiny_llama_dir, DOCS)
    assert figures["lm_eval:slmkit_tiny_qa"] == pytest.approx(expected, abs=1e-9)
    assert figures["lm_eval_mean"] == pytest.approx(expected, abs=1e-9)
    assert Path.cwd() == tmp_path  # the working directory is restored


def test_limit_scores_the_first_docs_only(tmp_path, tiny_llama_dir):
    tasks = write_task(tmp_path / "tasks")
    two = run_tasks(tiny_llama_dir, ["slmkit_tiny_qa"], tasks, limit=2)["lm_eval:slmkit_tiny_qa"]
    assert two == pytest.approx(hand_accuracy(tiny_llama_dir, DOCS[:2]), abs=1e-9)


def test_task_scores_take_the_first_known_metric_per_task():
    results = {"a": {"alias": "a", "acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.7},
               "b": {"alias": "b", "exact_match,strict-match": 0.25},
               "c": {"alias": "c", "perplexity,none": 3.0}}
    assert task_scores(results) == {"lm_eval:a": 0.5, "lm_eval:b": 0.25}
