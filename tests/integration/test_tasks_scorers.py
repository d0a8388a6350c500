"""Scorers on tiny random models with the embedded tokenizer; prefix sharing equals independent scoring."""

import pytest
import torch

from slmkit.errors import InputError
from slmkit.tasks.config import TaskConfig
from slmkit.tasks.data import ScoringRow
from slmkit.tasks.prefix import score_rows_shared
from slmkit.tasks.scorers import ClassifierScorer, PromptSplit, make_scorer, score_rows
from tests.tasks_helpers import (
    single_thread,  # noqa: F401
    smol_tokenizer,
    tiny_bert_classifier,
    tiny_causal_lm,
    tiny_decoder_classifier,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def rows(n_contexts=3, n_items=6):
    return [
        ScoringRow(f"how do I join path parts {c} " + "and more words " * c, f"os.path.join(a, *p) v{i}" + " x" * i,
                   i % 2, str(c))
        for c in range(n_contexts) for i in range(n_items)
    ]


@pytest.mark.parametrize("arch,kernel,strategy", [
    ("llama", "sdpa", "packed"), ("qwen2", "sdpa", "packed"), ("qwen3", "sdpa", "packed"),
    ("llama", "eager", "packed"), ("qwen2", "sdpa", "batched"), ("llama", "eager", "batched"),
])
def test_prefix_shared_equals_independent(arch, kernel, strategy):
    model = tiny_causal_lm(arch, seed=1)
    model.config._attn_implementation = kernel  # packed needs the kernel's own 4D mask format
    scorer = make_scorer(model, smol_tokenizer(), TaskConfig())
    data = rows()
    independent = score_rows(scorer, data, batch_size=5)
    shared = score_rows_shared(scorer, data, batch_size=4, strategy=strategy)  # chunks of 4 reuse the cache
    assert independent.shape == (len(data), 2)
    assert torch.max(torch.abs(independent - shared)).item() < 1e-4
    assert torch.max(torch.abs(independent.softmax(-1) - shared.softmax(-1))).item() < 1e-4
    # scores must depend on the item, or the equality above would be vacuous
    assert independent[:6, 1].std().item() > 1e-4


def test_verbalizer_logits_equal_full_lm_head_at_last_token():
    tok = smol_tokenizer()
    model = tiny_causal_lm("llama", seed=2)
    scorer = make_scorer(model, tok, TaskConfig())
    row = rows(1, 1)[0]
    prefix, suffix = scorer.encode(row)
    with torch.inference_mode():
        full = model(input_ids=torch.tensor([prefix + suffix])).logits[0, -1]
        got = scorer.logits([row])[0]
    assert torch.allclose(got, full[scorer.token_ids], atol=1e-5)
    assert scorer.token_ids == tok.convert_tokens_to_ids(["ĠNo", "ĠYes"])


def test_prompt_split_renders_template_and_chat():
    tok = smol_tokenizer()
    split = PromptSplit.from_task(TaskConfig(template="Q: {context}\nC: {item}\nA:"), tok)
    assert split.render("ctx {x}", "it") == ("Q: ctx {x}\nC: ", "it\nA:")
    chat = PromptSplit.from_task(TaskConfig(template="Q: {context}\nC: {item}", chat_template=True), tok)
    assert chat.prefix.startswith("<|im_start|>") and chat.suffix.endswith("<|im_start|>assistant\n")


def test_long_context_is_clipped_to_budget():
    scorer = make_scorer(tiny_causal_lm("llama"), smol_tokenizer(), TaskConfig(max_length=64))
    prefix, suffix = scorer.encode(ScoringRow("word " * 500, "item " * 100))
    # re-tokenizing the clipped text at the template seams may shift a token or two
    assert 56 <= len(prefix) + len(suffix) <= 64 + 2


def test_multi_token_verbalizer_rejected_with_real_tokenizer():
    with pytest.raises(InputError, match="not one"):
        make_scorer(tiny_causal_lm("llama"), smol_tokenizer(), TaskConfig(verbalizers=[" No", " Absolutely yes"]))


@pytest.mark.parametrize("num_labels", [1, 2])
def test_decoder_classifier_scores_ignore_padding(num_labels):
    model = tiny_decoder_classifier(num_labels=num_labels)
    scorer = make_scorer(model, smol_tokenizer(), TaskConfig())
    assert isinstance(scorer, ClassifierScorer)
    data = rows(2, 3)
    batched = score_rows(scorer, data, batch_size=6)
    alone = torch.cat([score_rows(scorer, [r]) for r in data])
    assert batched.shape == (6, num_labels)
    assert torch.allclose(batched, alone, atol=1e-5)


def test_bert_classifier_pair_encoding_and_label_count_check():
    model, tok = tiny_bert_classifier(num_labels=1)
    scorer = make_scorer(model, tok, TaskConfig())
    enc = scorer.batch(rows(1, 2))
    assert (enc["token_type_ids"][0] == 1).any()  # the item is the second segment
    out = score_rows(scorer, rows(2, 2))
    assert out.shape == (4, 1) and torch.isfinite(out).all()
    bad, tok = tiny_bert_classifier(num_labels=3)
    with pytest.raises(InputError, match="head has 3 label"):
        make_scorer(bad, tok, TaskConfig())


def test_real_minilm_encoder_loads_as_binary_scorer():
    from slmkit.tasks.loading import load_scorer
    from tests.tasks_helpers import minilm_dir

    scorer = load_scorer(minilm_dir(), TaskConfig())
    assert isinstance(scorer, ClassifierScorer) and scorer.model.config.num_labels == 1
    out = score_rows(scorer, rows(2, 3))
    assert out.shape == (6, 1) and torch.isfinite(out).all() and out.std() > 0
    three = load_scorer(minilm_dir(), TaskConfig(kind="classification", labels=[0, 1, 2],
                                                 verbalizers=[" a", " b", " c"]))
    assert three.model.config.num_labels == 3
