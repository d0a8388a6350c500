"""Fine-tuning scorers on tiny models: the loss goes down, LoRA merges into plain transformers weights,
a resumed run equals an uninterrupted one, and training on packed contexts equals row-by-row scoring."""

from __future__ import annotations

import pytest
import torch

from slmkit.errors import InputError
from slmkit.finetune import lora
from slmkit.finetune.config import FullFinetuneConfig, LoraFinetuneConfig
from slmkit.finetune.stage import adapt, unwrap
from slmkit.models import save_model
from slmkit.tasks.config import TaskConfig
from slmkit.tasks.data import rows_from_records
from slmkit.tasks.losses import label_loss
from slmkit.tasks.prefix import packed_logits
from slmkit.tasks.scorers import make_scorer, score_rows
from slmkit.tasks.train import finetune_scorer
from tests.integration.test_tasks_cli import ranking_rows
from tests.tasks_helpers import single_thread, smol_tokenizer, tiny_bert_classifier, tiny_causal_lm  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")
TASK = TaskConfig(template="Query: {context}\nCandidate: {item}\nMatch:")


def rows(groups=4, cands=4):
    return rows_from_records(ranking_rows(groups, cands), TASK.labels, source="rows.jsonl")


def loss_on(scorer, data, kind="pointwise") -> float:
    logits = score_rows(scorer, data)
    labels = torch.tensor([r.label for r in data])
    gid = {g: n for n, g in enumerate(dict.fromkeys(r.group for r in data))}
    return label_loss(logits, labels, torch.tensor([gid[r.group] for r in data]), kind).item()


class StopAt:
    """A reporter that kills the run (like Ctrl-C) when it reports step ``step``."""

    def __init__(self, step: int):
        self.step = step

    def info(self, msg):
        if f"step {self.step}/" in msg:
            raise KeyboardInterrupt


@pytest.mark.parametrize("cfg", [
    FullFinetuneConfig(max_steps=15, batch_size=8, lr=2e-3, warmup_steps=0),
    LoraFinetuneConfig(max_steps=15, batch_size=8, lr=1e-2, warmup_steps=0, r=4),
    LoraFinetuneConfig(max_steps=15, batch_size=8, lr=1e-2, warmup_steps=0, r=4, label_loss="listwise"),
], ids=["full", "lora", "lora-listwise"])
def test_finetuning_lowers_the_training_loss(tmp_path, cfg):
    data = rows()
    scorer = make_scorer(tiny_causal_lm("llama", seed=5), smol_tokenizer(), TASK)
    before = loss_on(scorer, data, cfg.label_loss)
    scorer.model, wrapped = adapt(scorer.model, cfg, seed=0)
    out = finetune_scorer(scorer, data, cfg, seed=0, work_dir=tmp_path)
    assert out["steps"] == 15 and out["final_loss"] < out["first_loss"]
    assert loss_on(scorer, data, cfg.label_loss) < 0.8 * before
    if wrapped is not None:
        frozen = [n for n, p in scorer.model.named_parameters() if not p.requires_grad]
        assert frozen and all("lora_" not in n for n in frozen)  # the base stays frozen, adapters train


def test_lora_merges_into_a_directory_plain_transformers_loads(tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    data = rows(3, 4)
    scorer = make_scorer(tiny_causal_lm("qwen2", seed=2), smol_tokenizer(), TASK)
    cfg = LoraFinetuneConfig(max_steps=6, batch_size=8, lr=5e-3, warmup_steps=0, r=4, dropout=0.1)
    scorer.model, wrapped = adapt(scorer.model, cfg, seed=0)
    finetune_scorer(scorer, data, cfg, seed=0)
    with_adapters = score_rows(scorer, data)
    save_model(unwrap(scorer.model, wrapped), scorer.tokenizer, tmp_path / "merged")
    with safe_open(str(tmp_path / "merged" / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora" in k or "base_layer" in k]
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert type(plain).__name__ == "Qwen2ForCausalLM"
    merged = score_rows(make_scorer(plain, smol_tokenizer(), TASK), data)
    assert torch.allclose(merged, with_adapters, atol=1e-4), (merged - with_adapters).abs().max()
    untrained = score_rows(make_scorer(tiny_causal_lm("qwen2", seed=2), smol_tokenizer(), TASK), data)
    assert not torch.allclose(merged, untrained, atol=1e-3)  # the adapters did change the model


def test_lora_on_a_classifier_trains_its_head_whole_and_merges(tmp_path):
    from transformers import AutoModelForSequenceClassification

    data = rows(3, 4)
    model, tok = tiny_bert_classifier(num_labels=1, seed=1)
    scorer = make_scorer(model, tok, TASK)
    cfg = LoraFinetuneConfig(max_steps=5, batch_size=8, lr=5e-3, warmup_steps=0, r=4)
    scorer.model, wrapped = adapt(scorer.model, cfg, seed=0)
    trained = {n for n, p in scorer.model.named_parameters() if p.requires_grad and "lora_" not in n}
    assert trained == {"classifier.modules_to_save.default.weight", "classifier.modules_to_save.default.bias"}
    finetune_scorer(scorer, data, cfg, seed=0)
    with_adapters = score_rows(scorer, data)
    save_model(unwrap(scorer.model, wrapped), tok, tmp_path / "merged")
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    merged = score_rows(make_scorer(plain, tok, TASK), data)
    assert torch.allclose(merged, with_adapters, atol=1e-5)


def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path):
    data = rows()
    cfg = LoraFinetuneConfig(max_steps=20, batch_size=8, lr=5e-3, r=4, dropout=0.2, checkpoint_every=10)

    def fresh():
        scorer = make_scorer(tiny_causal_lm("llama", seed=3), smol_tokenizer(), TASK)
        scorer.model, _ = adapt(scorer.model, cfg, seed=0)
        return scorer

    straight = fresh()
    finetune_scorer(straight, data, cfg, seed=1)
    interrupted = fresh()
    with pytest.raises(KeyboardInterrupt):
        finetune_scorer(interrupted, data, cfg, seed=1, work_dir=tmp_path, reporter=StopAt(20))
    resumed = fresh()  # a new process: the adapters come from the checkpoint at step 10
    out = finetune_scorer(resumed, data, cfg, seed=1, work_dir=tmp_path)
    assert out["steps"] == 20
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_packed_training_logits_equal_row_by_row_and_carry_gradients():
    data = rows(3, 5)
    shuffled = data[::2] + data[1::2]  # contexts interleaved: the output keeps the row order
    for arch, kernel in (("llama", "sdpa"), ("qwen2", "eager")):
        model = tiny_causal_lm(arch, seed=4)
        model.config._attn_implementation = kernel
        scorer = make_scorer(model, smol_tokenizer(), TASK)
        packed = packed_logits(scorer, shuffled)
        assert torch.allclose(packed, scorer.logits(shuffled), atol=1e-5)
        packed.sum().backward()
        assert model.get_decoder().layers[0].self_attn.q_proj.weight.grad is not None


def test_a_missing_lora_target_names_the_linear_layers():
    model = tiny_causal_lm("llama")
    with pytest.raises(InputError, match=r"\['query'\] are not linear layers.*q_proj"):
        lora.target_modules(model, LoraFinetuneConfig(target_modules=["query", "q_proj"]))
    assert "down_proj" in lora.target_modules(model, LoraFinetuneConfig())
