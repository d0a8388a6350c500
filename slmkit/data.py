"""Training, evaluation and calibration data: loading through `datasets`, chat rendering, masks.

An :class:`Example` is one tokenized sequence. ``loss_mask[t] == 1`` means token ``t`` is a
target (predicted from the logits at ``t - 1``): assistant turns for chat data, the completion
for prompt/completion data, every token for text. ``prompt_ids`` is what a model is given to
generate a response (chat rendered with the generation prompt); empty for text.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Example:
    input_ids: list[int]
    loss_mask: list[int]
    prompt_ids: list[int] = field(default_factory=list)
    source: str = ""  # "file:row" for error messages and provenance
    reference: str | None = None  # the dataset's own response text, when it has one


def collate(examples: list[Example], pad_id: int, *, side: str = "right"):
    """Pad a list of examples into tensors: input_ids, attention_mask, loss_mask (all [B, T])."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        cols = slice(0, n) if side == "right" else slice(width - n, width)
        ids[i, cols] = torch.tensor(e.input_ids)
        attn[i, cols] = 1
        mask[i, cols] = torch.tensor(e.loss_mask)
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": mask}


def collate_prompts(examples: list[Example], pad_id: int):
    """Left-padded prompt batch for generation: input_ids, attention_mask."""
    prompts = [Example(input_ids=e.prompt_ids, loss_mask=[0] * len(e.prompt_ids)) for e in examples]
    batch = collate(prompts, pad_id, side="left")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
