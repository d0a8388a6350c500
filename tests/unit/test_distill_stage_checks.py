"""Input checks of the distill stage that run before any training."""

import pytest
from transformers import LlamaConfig

from slmkit.data import Example
from slmkit.distill.config import DistillConfig
from slmkit.distill.stage import apply_token_mode, estimate_bytes, shared_vocab
from slmkit.errors import InputError


class Vocab:  # the two methods shared_vocab reads from a tokenizer
    def __init__(self, words):
        self.v = {w: i for i, w in enumerate(words)}

    def get_vocab(self):
        return dict(self.v)

    def __len__(self):
        return len(self.v)


def test_padding_only_difference_aligns_to_shared_rows_and_real_difference_errors():
    a, b = Vocab(["x", "y", "z"]), Vocab(["x", "y", "z"])
    assert shared_vocab(a, b, 8, 16) == 8
    with pytest.raises(InputError, match="tokenizers differ"):
        shared_vocab(a, Vocab(["x", "y", "w"]), 8, 8)
    with pytest.raises(InputError, match="rows"):
        shared_vocab(a, b, 2, 8)


def test_no_response_tokens_after_masking_is_an_input_error():
    exs = [Example([5, 6, 7], [0, 0, 0], prompt_ids=[5, 6, 7], source="f.jsonl:1")]
    with pytest.raises(InputError, match="no response tokens"):
        apply_token_mode(exs, "auto", "data.train")
    assert apply_token_mode(exs, "all", "data.train")[0].loss_mask == [1, 1, 1]
    with pytest.raises(InputError, match="no prompts"):
        apply_token_mode([Example([1, 2], [1, 1])], "response", "data.train")


def test_memory_estimate_grows_with_batch_and_shrinks_with_checkpointing():
    c = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=15, vocab_size=49152)
    small = estimate_bytes(DistillConfig(batch_size=1), c, 10**8, 10**8, False)
    big = estimate_bytes(DistillConfig(batch_size=64), c, 10**8, 10**8, False)
    ckpt = estimate_bytes(DistillConfig(batch_size=64, gradient_checkpointing=True), c, 10**8, 10**8, False)
    assert small < ckpt < big
    assert estimate_bytes(DistillConfig(), c, 10**8, 10**8, True) < estimate_bytes(DistillConfig(), c, 10**8, 10**8, False)
