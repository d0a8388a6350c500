"""lm-evaluation-harness tasks through its Python API, offline, on a model's PyTorch checkpoint.

A task can be one of lm-eval's own (its data comes from the hub, so it needs the network or a
filled cache) or a YAML file of your own in ``lm_eval_include_path`` over a local file, which needs
neither::

    # tasks/qa.yaml, beside tasks/qa.jsonl ({"question": ..., "choices": [...], "answer": 0} per line)
    task: my_qa
    dataset_path: json
    dataset_kwargs: {data_files: {test: qa.jsonl}}
    test_split: test
    output_type: multiple_choice
    doc_to_text: "{{question}}"
    doc_to_choice: "{{choices}}"
    doc_to_target: "{{answer}}"
    metric_list: [{metric: acc}]

lm-eval opens ``data_files`` relative to the working directory, so the tasks run from inside
``lm_eval_include_path``: a task's data files are relative to its YAML. Only the include path's
tasks are indexed when it is given (lm-eval's thousands of built-in task files are not scanned).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path

# figures taken from a task's results, in order of preference: the first one a task reports
SCORES = ("acc", "exact_match", "acc_norm", "f1", "mcc")


class LmEvalUnavailable(Exception):
    """Why lm-eval cannot run here (not installed, no tasks): the metric is skipped with this reason."""


def run_tasks(hf_dir: Path, tasks: list[str], include_path: Path | None = None, limit: int | None = None,
              batch_size: int = 1, device: str = "cpu") -> dict[str, float]:
    """``lm_eval:<task>`` -> its score (see SCORES) and ``lm_eval_mean``, for a transformers checkpoint."""
    if importlib.util.find_spec("lm_eval") is None:
        raise LmEvalUnavailable("lm_eval is not installed (pip install 'slmkit[eval]')")
    if not tasks:
        raise LmEvalUnavailable("lm_eval is listed in quality but lm_eval_tasks is empty")
    import lm_eval
    from lm_eval.tasks import TaskManager

    include = Path(include_path).resolve() if include_path else None
    manager = TaskManager(include_path=str(include), include_defaults=False) if include else TaskManager()
    with _working_dir(include):
        out = lm_eval.simple_evaluate(
            model="hf", model_args={"pretrained": str(Path(hf_dir).resolve()), "dtype": "float32"},
            tasks=list(tasks), limit=limit, batch_size=batch_size, device=device, task_manager=manager,
            log_samples=False, bootstrap_iters=0,
        )
    figures = task_scores(out["results"])
    missing = [t for t in tasks if f"lm_eval:{t}" not in figures]
    if missing:
        raise LmEvalUnavailable(f"lm_eval reported none of {', '.join(SCORES)} for task(s) {', '.join(missing)}")
    figures["lm_eval_mean"] = sum(figures.values()) / len(figures)
    return figures


@contextlib.contextmanager
def _working_dir(path: Path | None):
    """contextlib.chdir, which Python 3.10 lacks; None: stay where we are."""
    before = Path.cwd()
    if path is not None:
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def task_scores(results: dict[str, dict]) -> dict[str, float]:
    """lm-eval's ``results`` ({task: {"acc,none": 0.5, "acc_stderr,none": ..., "alias": ...}}) -> one score per task."""
    figures = {}
    for task, res in results.items():
        by_metric = {k.split(",")[0]: v for k, v in res.items() if isinstance(v, (int, float)) and "," in k}
        score = next((by_metric[m] for m in SCORES if m in by_metric), None)
        if score is not None:
            figures[f"lm_eval:{task}"] = float(score)
    return figures
