"""Prune stages on scorer students: a decoder classifier keeps its head; an encoder is refused."""

from __future__ import annotations

import io

import pytest
import torch
from pydantic import TypeAdapter

from slmkit.errors import InputError
from slmkit.models import load_model, save_model
from slmkit.progress import Reporter
from slmkit.prune import PruneConfig
from slmkit.prune.stage import _checked_config, prune_model
from tests.prune_helpers import random_examples
from tests.tasks_helpers import single_thread, tiny_bert_classifier, tiny_decoder_classifier  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")
SMALL = {"calibration_samples": 8, "batch_size": 4}


@pytest.mark.parametrize("method", [{"method": "depth", "keep_layers": 1},
                                    {"method": "width_mlp", "keep_ratio": 0.5}])
def test_decoder_classifier_keeps_its_head(tmp_path, method):
    model = tiny_decoder_classifier(num_labels=1)
    save_model(model, None, tmp_path / "in")
    model = load_model(tmp_path / "in")  # the stage's loader: the classifier class, not a causal LM
    assert type(model).__name__ == "LlamaForSequenceClassification"
    head = model.score.weight.detach().clone()
    cfg = TypeAdapter(PruneConfig).validate_python({**method, **SMALL})
    prune_model(model, cfg, random_examples(8), [], 0, reporter=Reporter(io.StringIO()))
    save_model(model, None, tmp_path / "out")
    reloaded = load_model(tmp_path / "out")
    assert type(reloaded).__name__ == "LlamaForSequenceClassification"
    assert torch.equal(reloaded.score.weight, head)  # hidden size is never pruned: the head is untouched
    logits = reloaded(torch.randint(3, 100, (2, 9)), attention_mask=torch.ones(2, 9, dtype=torch.long)).logits
    assert logits.shape == (2, 1) and torch.isfinite(logits).all()


def test_encoder_classifier_is_refused_clearly():
    model, _ = tiny_bert_classifier()
    with pytest.raises(InputError, match="model_type 'bert' is not supported"):
        _checked_config(model.config)
