"""slmkit's generator against ``model.generate`` on tiny random models; its sampler against HF's warpers."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from slmkit.data import Example, load_examples
from slmkit.distill.generate import (
    Sampling,
    fast_path_supported,
    generate_responses,
    half_bucket,
    hf_generate_ids,
    next_tokens,
    split_response,
    warp_logits,
)
from slmkit.recipe import DataSpec
from tests.distill_helpers import tiny_llama

VOCAB = 96


def sharp(model):
    """Weights x8: confident, varied next tokens (std-0.02 random weights give near-ties and loops)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(8.0)
    return model.eval()


def ragged_prompts(n: int, seed: int = 0, vocab: int = VOCAB) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (int(torch.randint(1, 14, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def examples_of(prompts: list[list[int]]) -> list[Example]:
    return [Example(list(p), [0] * len(p), list(p), f"p:{i}") for i, p in enumerate(prompts)]


def reference(model, prompts, *, eos_id, max_new_tokens, batch_size, pad_id=0):
    rows = hf_generate_ids(model, prompts, pad_id=pad_id, eos_id=eos_id, max_new_tokens=max_new_tokens,
                           sampling=Sampling(), batch_size=batch_size)
    return [split_response(r, eos_id, pad_id) for r in rows]


def responses(out: list[Example]) -> list[list[int]]:
    return [e.input_ids[len(e.prompt_ids):] for e in out]


def mid_answer_eos(model, prompts, max_new_tokens: int) -> int:
    """A token the model writes in the middle of some answers but not at the start of all: as EOS it
    stops some rows early while others run on."""
    free = reference(model, prompts, eos_id=None, max_new_tokens=max_new_tokens, batch_size=4)
    counts = Counter(t for r in free for t in r[2:-2])
    for tok, _ in counts.most_common():
        stops = [r.index(tok) for r in free if tok in r]
        if any(0 < s < max_new_tokens - 2 for s in stops) and len(stops) < len(free):
            return tok
    raise AssertionError("no token usable as a mid-answer EOS")


# --- greedy: exactly model.generate's tokens ------------------------------------------------


def test_greedy_fp32_matches_generate_with_ragged_prompts_eos_mid_batch_and_more_prompts_than_slots():
    model, prompts = sharp(tiny_llama(layers=2, hidden=64)), ragged_prompts(11)
    eos = mid_answer_eos(model, prompts, 12)
    want = reference(model, prompts, eos_id=eos, max_new_tokens=12, batch_size=4)
    assert len({len(r) for r in want}) > 1 and any(r[-1] == eos for r in want)  # the case is really ragged
    done = []
    got = generate_responses(model, examples_of(prompts), pad_id=0, eos_id=eos, max_new_tokens=12,
                             do_sample=False, batch_size=4, dtype="float32", on_batch=done.append)
    assert responses(got) == want
    assert sum(done) == len(prompts)


def test_examples_keep_input_order_prompt_and_loss_mask_on_the_response_only():
    model, prompts = sharp(tiny_llama(layers=2, hidden=64)), ragged_prompts(7, seed=3)
    out = generate_responses(model, examples_of(prompts), pad_id=0, eos_id=None, max_new_tokens=5,
                             do_sample=False, batch_size=3, dtype="float32")
    for i, (e, p) in enumerate(zip(out, prompts)):
        assert e.source == f"p:{i}" and e.prompt_ids == p and e.input_ids[: len(p)] == p
        assert e.loss_mask == [0] * len(p) + [1] * 5


def test_one_prompt_batch_of_one_and_a_single_new_token():
    model, prompts = sharp(tiny_llama(layers=2, hidden=64)), ragged_prompts(3, seed=5)
    for batch, n in [(1, 6), (8, 1)]:
        want = reference(model, prompts, eos_id=None, max_new_tokens=n, batch_size=batch)
        got = generate_responses(model, examples_of(prompts), pad_id=0, eos_id=None, max_new_tokens=n,
                                 do_sample=False, batch_size=batch, dtype="float32")
        assert responses(got) == want


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_greedy_matches_generate_on_chat_prompts_with_the_real_tokenizer(tmp_path, smollm2_tokenizer_dir, arch):
    from transformers import AutoTokenizer

    from tests.conftest import make_tiny_model

    path = make_tiny_model(tmp_path / arch, smollm2_tokenizer_dir, arch, num_hidden_layers=2)
    model, tok = sharp(AutoModelForCausalLM.from_pretrained(path)), AutoTokenizer.from_pretrained(path)
    exs = load_examples(DataSpec(path="builtin:prompts", max_samples=9), tok, base_dir=tmp_path)
    prompts = [e.prompt_ids for e in exs]
    assert len({len(p) for p in prompts}) > 1
    want = reference(model, prompts, eos_id=tok.eos_token_id, max_new_tokens=8, batch_size=4,
                     pad_id=tok.pad_token_id)
    got = generate_responses(model, exs, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, max_new_tokens=8,
                             do_sample=False, batch_size=4, dtype="float32")
    assert responses(got) == want


def test_bf16_leaves_the_callers_model_untouched_and_restores_training_mode():
    model, prompts = sharp(tiny_llama(layers=2, hidden=64)), ragged_prompts(5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    out = generate_responses(model, examples_of(prompts), pad_id=0, eos_id=None, max_new_tokens=6,
                             do_sample=False, batch_size=2, dtype="bfloat16")
    assert model.training and all(len(r) == 6 for r in responses(out))
    for n, p in model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, before[n]), n
    fp32 = reference(model.eval(), prompts, eos_id=None, max_new_tokens=6, batch_size=2)
    assert sum(a[0] == b[0] for a, b in zip(responses(out), fp32)) >= 4  # bf16 rounding rarely flips a confident token


def test_models_the_slot_cache_does_not_cover_go_through_generate():
    model = tiny_llama(layers=2)
    assert fast_path_supported(model, 128)
    model.config.sliding_window = 64  # a window shorter than the cache
    assert not fast_path_supported(model, 128) and fast_path_supported(model, 64)
    model.config.sliding_window, model.config.layer_types = None, ["sliding_attention", "full_attention"]
    assert not fast_path_supported(model, 128)


def test_half_bucket_halves_until_the_active_rows_no_longer_fit():
    assert [half_bucket(a, 16) for a in (16, 9, 8, 5, 3, 1)] == [16, 16, 8, 8, 4, 1]
    assert half_bucket(2, 6) == 3 and half_bucket(4, 6) == 6


# --- sampling: model.generate's distribution ------------------------------------------------


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, 1.0), (0.7, 50, 1.0), (1.3, 20, 0.8),
                                                     (1.0, None, 0.5), (0.5, 5, 0.95)])
def test_warp_logits_equals_generates_warpers(temperature, top_k, top_p):
    logits = torch.randn(6, 200) * 3
    want = logits.clone()
    for w in [TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k) if top_k else None,
              TopPLogitsWarper(top_p) if top_p < 1 else None]:
        want = w(None, want) if w is not None else want
    got = warp_logits(logits, Sampling(True, temperature, top_k, top_p))
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    torch.testing.assert_close(got[~torch.isinf(got)], want[~torch.isinf(want)])


def test_same_seed_draws_the_tokens_generates_sampler_draws():
    logits, s = torch.randn(8, 50) * 2, Sampling(True, 0.8, 10, 0.9)
    torch.manual_seed(7)
    got = next_tokens(logits, s)
    torch.manual_seed(7)
    scores = TopPLogitsWarper(0.9)(None, TopKLogitsWarper(10)(None, TemperatureLogitsWarper(0.8)(None, logits)))
    assert torch.equal(got, torch.multinomial(scores.softmax(-1), 1).squeeze(1))


def test_samples_follow_the_softmax_on_a_tiny_vocabulary():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(20000, 1)
    draws = next_tokens(logits, Sampling(True, 1.0, None, 1.0))
    freq = torch.bincount(draws, minlength=4).double() / len(draws)
    p = logits[0].double().softmax(-1)
    assert torch.all((freq - p).abs() < 4 * (p * (1 - p) / len(draws)).sqrt())  # 4 sigma per token
    hot = next_tokens(logits[:100], Sampling(True, 0.5, 2, 1.0))
    assert set(hot.tolist()) == {0, 1}  # top-k 2 keeps the two best


def test_near_zero_temperature_sampling_is_greedy_end_to_end():
    model, prompts = sharp(tiny_llama(layers=2, hidden=64)), ragged_prompts(6, seed=2)
    want = reference(model, prompts, eos_id=None, max_new_tokens=7, batch_size=4)
    got = generate_responses(model, examples_of(prompts), pad_id=0, eos_id=None, max_new_tokens=7,
                             do_sample=True, temperature=1e-4, batch_size=4, dtype="float32")
    assert responses(got) == want


def test_unknown_dtype_is_an_input_error():
    from slmkit.errors import InputError

    with pytest.raises(InputError, match="dtype"):
        generate_responses(tiny_llama(), examples_of([[3, 4]]), pad_id=0, eos_id=None, max_new_tokens=2,
                           do_sample=False, dtype="float16")


@pytest.mark.slow
def test_compiled_decode_step_gives_generates_greedy_tokens():
    model, prompts = sharp(tiny_llama(layers=2, hidden=64)), ragged_prompts(7, seed=4)
    want = reference(model, prompts, eos_id=None, max_new_tokens=6, batch_size=4)
    got = generate_responses(model, examples_of(prompts), pad_id=0, eos_id=None, max_new_tokens=6,
                             do_sample=False, batch_size=4, dtype="float32", compile=True)
    assert responses(got) == want
