"""Quality metrics: pure math on tensors and strings, and a registry of metrics over a model.

A metric is measured through an ``LM`` handle (``slmkit.runtimes``): ``logits(seqs)`` for
teacher-forced scoring and ``generate(prompts, n)`` for greedy answers, so the same code scores a
PyTorch model, an ONNX GenAI graph or a GGUF file. Evaluation is greedy and teacher-forced only,
so measuring one model twice gives identical figures.

``METRICS`` is the closed registry the recipe's ``quality:`` list is checked against; another
area (predictive tasks: AUC, NDCG) adds its entry here with the figures it produces.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from slmkit.benchmark.stats import PerExample, figure_value

if TYPE_CHECKING:  # torch is imported lazily: the recipe schema imports this module
    import torch

    from slmkit.data import Example
    from slmkit.runtimes.base import LM


class MetricSkipped(Exception):
    """A metric that cannot be measured for this model or data; the reason goes into the report."""


# ---------------------------------------------------------------- pure math: tensors


def sequence_nll(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    """Summed negative log-likelihood of the masked targets of one sequence, and their count.

    ``logits[t]`` predicts ``ids[t + 1]``; ``mask[t] == 1`` marks ``ids[t]`` as a target (the
    convention of ``slmkit.data.Example.loss_mask``), so position 0 is never a target.
    """
    import torch

    logp = torch.log_softmax(logits[:-1].double(), dim=-1)
    target_logp = logp.gather(-1, ids[1:].long().unsqueeze(-1)).squeeze(-1)
    keep = mask[1:].bool()
    return float(-target_logp[keep].sum()), int(keep.sum())


def agreement_stats(teacher_logits: torch.Tensor, model_logits: torch.Tensor) -> tuple[int, float, int]:
    """Top-1 matches, summed KL(teacher || model) and position count over [N, V] logit rows.

    Both sides go through the same float64 log-softmax, so the teacher against itself gives
    exactly 0, not rounding noise.
    """
    import torch

    t = torch.log_softmax(teacher_logits.double(), dim=-1)
    m = torch.log_softmax(model_logits.double(), dim=-1)
    matches = int((t.argmax(-1) == m.argmax(-1)).sum())
    kl = float((t.exp() * (t - m)).sum())
    return matches, kl, int(t.shape[0])


# ---------------------------------------------------------------- pure math: answer text

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed (SQuAD-style answer normalisation)."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def contains(prediction: str, reference: str) -> float:
    """1 when the normalised reference appears in the normalised prediction as whole words."""
    ref = normalize_answer(reference)
    return float(bool(ref) and f" {ref} " in f" {normalize_answer(prediction)} ")


def lcs_length(a: list[str], b: list[str]) -> int:
    """Longest common subsequence length, O(len(a) * len(b)) time, O(len(b)) memory."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over normalised words (Lin 2004, with beta = 1)."""
    p, r = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not p or not r:
        return float(p == r)
    lcs = lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------- evaluation inputs


@dataclass
class TeacherTargets:
    """The teacher's greedy responses and its logits on them (for agreement), kept on disk."""

    sequences: list[list[int]]  # prompt + teacher response
    starts: list[int]  # index of the first response token in each sequence
    logit_files: list[Path]  # float32 [len - start, V]: teacher logits predicting each response token
    ids: list[str] = field(default_factory=list)  # the example each sequence answers (Example.source)

    def logits(self, i: int) -> torch.Tensor:
        import numpy as np
        import torch

        return torch.from_numpy(np.load(self.logit_files[i]))


@dataclass
class EvalSet:
    examples: list[Example]
    tokenizer: Any
    max_new_tokens: int
    batch_size: int = 8
    targets: TeacherTargets | None = None
    config: Any = None  # the BenchmarkConfig, for metrics that take options (lm_eval)
    extras: dict[str, Any] = field(default_factory=dict)  # inputs of metrics other areas register
    general: list[Example] = field(default_factory=list)  # packed general text (general_perplexity)
    _answers: Any = field(default=None, repr=False)  # LM -> its greedy answers, generated once per model

    def answers(self, lm: LM, known: list[list[int]] | None = None) -> list[list[int]]:
        """The model's greedy answers to every eval prompt (empty where there is none), generated once.

        ``known``: answers this model already gave (the teacher's cached responses), used as they are.
        """
        import weakref

        if self._answers is None:
            self._answers = weakref.WeakKeyDictionary()
        if lm not in self._answers:
            prompts = [e.prompt_ids for e in self.examples]
            self._answers[lm] = known or greedy_answers(lm, prompts, self.max_new_tokens, self.batch_size)
        return self._answers[lm]


def greedy_answers(lm: LM, prompts: list[list[int]], max_new_tokens: int, batch_size: int) -> list[list[int]]:
    """Greedy answers of ``lm`` to each prompt, in batches (empty for an empty prompt)."""
    out: list[list[int]] = [[] for _ in prompts]
    idx = [i for i, p in enumerate(prompts) if p]
    for lo in range(0, len(idx), batch_size):
        chunk = idx[lo : lo + batch_size]
        for i, ans in zip(chunk, lm.generate([prompts[i] for i in chunk], max_new_tokens)):
            out[i] = ans
    return out


def build_teacher_targets(
    teacher: LM, prompts: list[list[int]], responses: list[list[int]], out_dir: Path, batch_size: int = 8,
    ids: list[str] | None = None,
) -> TeacherTargets:
    """Score the teacher on its own responses and keep its logits at the response positions.

    Use the eval batch size: the same batches the teacher is later scored in give it exactly
    top1_agreement 1 and teacher_kl 0, not padding-shape rounding noise.
    """
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    ids = ids or [str(i) for i in range(len(prompts))]
    keep = [i for i, (p, r) in enumerate(zip(prompts, responses)) if p and r]
    pairs = [(prompts[i], responses[i]) for i in keep]
    seqs = [p + r for p, r in pairs]
    starts = [len(p) for p, _ in pairs]
    files = []
    for lo in range(0, len(seqs), batch_size):
        for j, logits in enumerate(teacher.logits(seqs[lo : lo + batch_size])):
            i = lo + j
            rows = logits[starts[i] - 1 : len(seqs[i]) - 1].float().contiguous()
            files.append(out_dir / f"teacher_logits_{i:05d}.npy")
            np.save(files[-1], rows.numpy())
    return TeacherTargets(seqs, starts, files, [ids[i] for i in keep])


# ---------------------------------------------------------------- metrics over a model


def _batches(items: list, size: int):
    for lo in range(0, len(items), size):
        yield items[lo : lo + size]


def _ids(examples: list[Example]) -> list[str]:
    return [e.source or str(i) for i, e in enumerate(examples)]


def _nll_per_example(examples: list[Example], lm: LM, batch_size: int) -> PerExample:
    """Summed NLL (numerator) and target count (denominator) of each example: perplexity's parts."""
    import torch

    nll, count = [], []
    for batch in _batches(examples, batch_size):
        for ex, logits in zip(batch, lm.logits([e.input_ids for e in batch])):
            s, n = sequence_nll(logits, torch.tensor(ex.input_ids), torch.tensor(ex.loss_mask))
            nll.append(s)
            count.append(n)
    if sum(count) == 0:
        raise MetricSkipped("no target tokens (every loss_mask is empty)")
    return PerExample(np.asarray(nll), np.asarray(count, dtype=np.float64), _ids(examples))


def perplexity_metric(ev: EvalSet, lm: LM) -> dict[str, PerExample]:
    return {"perplexity": _nll_per_example(ev.examples, lm, ev.batch_size)}


def general_perplexity_metric(ev: EvalSet, lm: LM) -> dict[str, PerExample]:
    if not ev.general:
        raise MetricSkipped("no general text (benchmark.general_text is off or empty)")
    return {"general_perplexity": _nll_per_example(ev.general, lm, ev.batch_size)}


def agreement_metric(ev: EvalSet, lm: LM) -> dict[str, PerExample]:
    t = ev.targets
    if t is None or not t.sequences:
        raise MetricSkipped("no teacher responses (the eval data has no prompts to answer)")
    matches, kl, n = [], [], []
    for lo in range(0, len(t.sequences), ev.batch_size):
        for j, logits in enumerate(lm.logits(t.sequences[lo : lo + ev.batch_size])):
            i = lo + j
            rows = logits[t.starts[i] - 1 : len(t.sequences[i]) - 1]
            m, k, c = agreement_stats(t.logits(i), rows)
            matches.append(m)
            kl.append(k)
            n.append(c)
    den = np.asarray(n, dtype=np.float64)
    return {"top1_agreement": PerExample(np.asarray(matches, dtype=np.float64), den, t.ids),
            "teacher_kl": PerExample(np.asarray(kl), den, t.ids)}


def _answered(ev: EvalSet) -> list[int]:
    idx = [i for i, e in enumerate(ev.examples) if e.reference is not None and e.prompt_ids]
    if not idx:
        raise MetricSkipped("no eval examples with both a prompt and a reference answer")
    return idx


def task_metric(ev: EvalSet, lm: LM) -> dict[str, PerExample]:
    idx = _answered(ev)
    answers = ev.answers(lm)
    texts = [ev.tokenizer.decode(answers[i], skip_special_tokens=True) for i in idx]
    refs = [ev.examples[i].reference for i in idx]
    ids = [_ids(ev.examples)[i] for i in idx]
    return {name: PerExample.of_values([fn(t, r) for t, r in zip(texts, refs)], ids)
            for name, fn in (("exact_match", exact_match), ("contains", contains), ("rouge_l", rouge_l))}


def answer_likelihood_metric(ev: EvalSet, lm: LM) -> dict[str, PerExample]:
    # generated here (shared with `task`); the teacher scores the answers once every model has
    # answered (slmkit.benchmark.stage), since only one model is loaded at a time
    if not any(e.prompt_ids for e in ev.examples):
        raise MetricSkipped("no prompts to answer (text-only eval data)")
    ev.answers(lm)
    return {}


def mean_logprob(logits, ids: list[int], start: int) -> float:
    """Mean log-probability the logits give the tokens ``ids[start:]`` (each predicted from t - 1)."""
    import torch

    if start >= len(ids):
        return float("-inf")
    logp = torch.log_softmax(logits[start - 1 : len(ids) - 1].double(), dim=-1)
    target = torch.tensor(ids[start:]).long().unsqueeze(-1)
    return float(logp.gather(-1, target).mean())


def relative_likelihood(model_logp: float, teacher_logp: float) -> float:
    """exp(mean log p of the model's answer - of the teacher's own), capped at 1 (the teacher's)."""
    if not math.isfinite(model_logp):
        return 0.0
    return min(1.0, math.exp(model_logp - teacher_logp))


def judge_answers(teacher: LM, ev: EvalSet, answers: list[list[int]]) -> PerExample:
    """answer_likelihood per prompt: the teacher's per-token likelihood of ``answers`` relative to its own.

    An answer identical to the teacher's scores exactly 1; the teacher's own answers give 1.
    """
    own = ev.extras["teacher_answers"]
    idx = [i for i, e in enumerate(ev.examples) if e.prompt_ids and own[i]]
    if not idx:
        raise MetricSkipped("the teacher answered no eval prompt")
    # the teacher's own answers are scored once per eval set, not again for every judged model
    own_logp = ev.extras.setdefault("teacher_answer_logp", {})
    logp = {("teacher", i): v for i, v in own_logp.items()}
    for who, seqs in (("teacher", own), ("model", answers)):
        todo = [i for i in idx if i not in own_logp] if who == "teacher" else [i for i in idx if seqs[i] != own[i]]
        for chunk in _batches(todo, ev.batch_size):
            full = [ev.examples[i].prompt_ids + list(seqs[i]) for i in chunk]
            for i, seq, logits in zip(chunk, full, teacher.logits(full)):
                logp[(who, i)] = mean_logprob(logits, seq, len(ev.examples[i].prompt_ids))
                if who == "teacher":
                    own_logp[i] = logp[(who, i)]
    values = [1.0 if answers[i] == own[i] else relative_likelihood(logp[("model", i)], logp[("teacher", i)])
              for i in idx]
    return PerExample.of_values(values, [_ids(ev.examples)[i] for i in idx])


def lm_eval_metric(ev: EvalSet, lm: LM) -> dict[str, float | None]:
    """lm-evaluation-harness tasks on the model's PyTorch checkpoint (benchmark/lm_eval_hook.py)."""
    from slmkit.benchmark.lm_eval_hook import LmEvalUnavailable, run_tasks

    cfg = ev.config
    if not getattr(lm, "hf_dir", None):
        raise MetricSkipped(f"lm_eval runs PyTorch checkpoints only, not {lm.backend}")
    try:
        return run_tasks(lm.hf_dir, cfg.lm_eval_tasks, cfg.lm_eval_include_path, cfg.lm_eval_limit,
                         device=str(getattr(lm, "device", "cpu")))
    except LmEvalUnavailable as e:
        raise MetricSkipped(str(e)) from None


@dataclass(frozen=True)
class Metric:
    """``compute`` returns each figure's per-example values (or a plain number where a figure has none)."""

    compute: Callable[[EvalSet, LM], dict[str, PerExample | float | None]]
    figures: dict[str, bool]  # figure name -> higher is better (used by quality_retained and plots)
    needs_teacher_targets: bool = False
    judged: bool = False  # figures the teacher computes from the model's answers after every model ran


def scoring_metric(ev: EvalSet, lm: LM) -> dict[str, float | None]:
    raise MetricSkipped("scoring figures come from the predictive benchmark (slmkit.benchmark.scoring)")


# figures of ranking / classification scorers (slmkit.tasks.metrics); NDCG is `ndcg@<k>` for the
# task's k, accepted by the benchmark config as a pattern
SCORING_FIGURES = {"auc": True, "accuracy": True, "log_loss": False, "ece": False, "mrr": True,
                   "teacher_label_agreement": True, "teacher_score_spearman": True}

METRICS: dict[str, Metric] = {
    "perplexity": Metric(perplexity_metric, {"perplexity": False}),
    "general_perplexity": Metric(general_perplexity_metric, {"general_perplexity": False}),
    "answer_likelihood": Metric(answer_likelihood_metric, {"answer_likelihood": True}, True, judged=True),
    "teacher_agreement": Metric(agreement_metric, {"top1_agreement": True, "teacher_kl": False}, True),
    "task": Metric(task_metric, {"exact_match": True, "contains": True, "rouge_l": True}),
    "lm_eval": Metric(lm_eval_metric, {"lm_eval_mean": True}),
    "scoring": Metric(scoring_metric, SCORING_FIGURES),
}


def figure_directions(metric_names: list[str]) -> dict[str, bool]:
    """Figure -> higher-is-better, for the figures the named metrics produce."""
    out: dict[str, bool] = {}
    for name in metric_names:
        out.update(METRICS[name].figures)
    return out


# how a figure is formed from its per-example parts (slmkit.benchmark.stats); "mean" otherwise
FIGURE_KINDS = {"perplexity": "perplexity", "general_perplexity": "perplexity"}


def figure_kind(figure: str) -> str:
    return FIGURE_KINDS.get(figure, "mean")


def evaluate(ev: EvalSet, lm: LM, metric_names: list[str]
             ) -> tuple[dict[str, float | None], dict[str, str], dict[str, PerExample]]:
    """Every named metric on one model: (figures, skipped metric -> reason, per-example values)."""
    figures: dict[str, float | None] = {}
    skipped: dict[str, str] = {}
    per_example: dict[str, PerExample] = {}
    for name in metric_names:
        try:
            out = METRICS[name].compute(ev, lm)
        except MetricSkipped as e:
            skipped[name] = str(e)
            out = {}
        figures.update(dict.fromkeys(METRICS[name].figures))
        for f, value in out.items():
            if isinstance(value, PerExample):
                per_example[f] = value
                figures[f] = figure_value(value, figure_kind(f))
            else:
                figures[f] = value
    return figures, skipped, per_example


def retained(model: float | None, teacher: float | None, higher_is_better: bool) -> float | None:
    """Model over teacher, inverted for lower-is-better figures so 1.0 always means 'as good'."""
    if model is None or teacher is None:
        return None
    num, den = (model, teacher) if higher_is_better else (teacher, model)
    if den == 0:
        return 1.0 if num == 0 else None
    return num / den
