"""Scorers: a model plus the rule that turns (context, item) rows into label logits [B, K].

Two kinds, either of which can be teacher or student:

- :class:`CausalLMScorer`: a causal LM reads the prompt template and the logits of the
  verbalizer tokens (" No", " Yes") at the last position are the label logits. Only those K rows
  of the output embedding are multiplied, never the whole vocabulary.
- :class:`ClassifierScorer`: an ``AutoModelForSequenceClassification`` (encoder or decoder)
  reads the (context, item) pair; its head gives K logits, or one binary logit.

Scorer methods keep autograd on, so the distill loop can train through them; callers that only
score wrap them in ``torch.inference_mode()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from slmkit.errors import InputError
from slmkit.tasks.config import TaskConfig
from slmkit.tasks.data import ScoringRow, verbalizer_ids

ITEM, CONTEXT = "{item}", "{context}"


@dataclass(frozen=True)
class PromptSplit:
    """The rendered prompt cut at ``{item}``: ``prefix`` holds the context, ``suffix`` the item.

    A scored sequence is tokens(prefix) + tokens(suffix), tokenized apart, so the tokens of a
    context are the same for every candidate; that is what makes the prefix KV cache reusable
    and prefix-shared scores equal to independent ones.
    """

    prefix: str
    suffix: str

    @classmethod
    def from_task(cls, task: TaskConfig, tokenizer) -> PromptSplit:
        text = task.template
        if task.chat_template:
            if getattr(tokenizer, "chat_template", None) is None:
                raise InputError("task.chat_template is true but the tokenizer has no chat template")
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        cut = text.index(ITEM)
        return cls(prefix=text[:cut], suffix=text[cut:])

    def render(self, context: str, item: str) -> tuple[str, str]:
        # str.replace, not str.format: chat templates and user text may hold literal braces
        return self.prefix.replace(CONTEXT, context), self.suffix.replace(ITEM, item)


def _bos(tokenizer) -> list[int]:
    """The BOS token iff this tokenizer adds one by itself (Llama does, Qwen and SmolLM2 do not)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    return [bos] if tokenizer("a").input_ids[:1] == [bos] else []


def _clip(tokenizer, text: str, max_tokens: int) -> str:
    """``text`` cut to at most ``max_tokens`` tokens (unchanged when it fits)."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] ids and attention mask, padded on the right (real tokens keep positions 0..n-1)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def last_positions(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """hidden[b, n_b - 1] for right-padded rows: [B, T, H] -> [B, H]."""
    last = mask.sum(dim=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]


class CausalLMScorer:
    """Verbalizer scoring with a causal LM: label logits = LM logits of the answer tokens."""

    kind = "causal_lm"

    def __init__(self, model, tokenizer, task: TaskConfig):
        self.model, self.tokenizer, self.task = model, tokenizer, task
        self.token_ids = verbalizer_ids(tokenizer, task.verbalizers)
        self.prompt = PromptSplit.from_task(task, tokenizer)
        self.bos = _bos(tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = 0 if pad is None else pad  # pads sit after the last real token and are never attended to
        # budget split: items are short candidates, contexts take what the template text leaves
        self.item_budget = max(8, task.max_length // 4)
        empty = [tokenizer.encode(t, add_special_tokens=False) for t in self.prompt.render("", "")]
        self.context_budget = max(1, task.max_length - self.item_budget - len(empty[0]) - len(empty[1]) - len(self.bos))

    def encode(self, row: ScoringRow) -> tuple[list[int], list[int]]:
        """(prefix ids, suffix ids) of one row; the prefix depends on the context only."""
        return self.encode_prefix(row.context), self.encode_suffix(row.item)

    def encode_prefix(self, context: str) -> list[int]:
        prefix, _ = self.prompt.render(_clip(self.tokenizer, context, self.context_budget), "")
        return self.bos + self.tokenizer.encode(prefix, add_special_tokens=False)

    def encode_suffix(self, item: str) -> list[int]:
        _, suffix = self.prompt.render("", _clip(self.tokenizer, item, self.item_budget))
        return self.tokenizer.encode(suffix, add_special_tokens=False)

    def head(self, hidden_last: torch.Tensor) -> torch.Tensor:
        """[B, H] final hidden states -> [B, K] verbalizer logits (the LM head's K rows only)."""
        out = self.model.get_output_embeddings()
        rows = torch.tensor(self.token_ids, device=out.weight.device)
        logits = hidden_last.to(out.weight.dtype) @ out.weight[rows].T
        if getattr(out, "bias", None) is not None:
            logits = logits + out.bias[rows]
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:  # Gemma-style soft cap, applied by the model to all logits
            logits = torch.tanh(logits / cap) * cap
        return logits.float()

    def logits_of_ids(self, seqs: Sequence[Sequence[int]]) -> torch.Tensor:
        """Label logits of full token sequences, one forward pass, no cache."""
        device = self.model.get_output_embeddings().weight.device
        ids, mask = right_pad(seqs, self.pad_id)
        ids, mask = ids.to(device), mask.to(device)
        hidden = self.model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        return self.head(last_positions(hidden, mask))

    def logits(self, rows: Sequence[ScoringRow]) -> torch.Tensor:
        """[B, K] label logits, every row scored on its own (the reference for prefix sharing)."""
        return self.logits_of_ids([p + s for p, s in map(self.encode, rows)])


class ClassifierScorer:
    """A sequence-classification model on (context, item) pairs; its head is the label logits."""

    kind = "classifier"

    def __init__(self, model, tokenizer, task: TaskConfig):
        self.model, self.tokenizer, self.task = model, tokenizer, task
        n = model.config.num_labels
        if n != len(task.labels) and not (n == 1 and len(task.labels) == 2):
            raise InputError(
                f"classifier head has {n} label(s) but task.labels declares {len(task.labels)}; "
                "use a head of 1 (binary) or one per label"
            )
        if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token  # decoder classifiers need a pad id to find the last token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id

    def batch(self, rows: Sequence[ScoringRow]) -> dict[str, torch.Tensor]:
        """Tokenized pairs; only the context is truncated, the item is kept whole."""
        return self.tokenizer(
            [r.context for r in rows], [r.item for r in rows], padding=True, truncation="only_first",
            max_length=self.task.max_length, return_tensors="pt",
        )

    def logits(self, rows: Sequence[ScoringRow]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        enc = {k: v.to(device) for k, v in self.batch(rows).items()}
        return self.model(**enc).logits.float()


SCORERS = {"causal_lm": CausalLMScorer, "classifier": ClassifierScorer}


def scorer_kind(model) -> str:
    """Which scorer fits a loaded model: a sequence-classification head, or an LM head."""
    name = type(model).__name__  # the loaded class, not config.architectures: one checkpoint loads as either
    if name.endswith("ForSequenceClassification"):
        return "classifier"
    if name.endswith("ForCausalLM") and model.get_output_embeddings() is not None:
        return "causal_lm"
    raise InputError(f"{name}: neither a causal LM nor a sequence classifier; cannot score with it")


def make_scorer(model, tokenizer, task: TaskConfig):
    """The scorer for ``model``: verbalizer scoring for causal LMs, the head for classifiers."""
    return SCORERS[scorer_kind(model)](model, tokenizer, task)


def score_rows(scorer, rows: Sequence[ScoringRow], batch_size: int = 16) -> torch.Tensor:
    """[N, K] label logits of all rows, in batches, without autograd."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(rows), batch_size):
            out.append(scorer.logits(rows[i : i + batch_size]).cpu())
    return torch.cat(out)
