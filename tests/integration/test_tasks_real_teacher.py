"""The embedded SmolLM2-135M teacher as a verbalizer scorer (slow: loads the 135M model)."""

import pytest
import torch

from slmkit.tasks.config import TaskConfig
from slmkit.tasks.data import ScoringRow
from slmkit.tasks.prefix import score_rows_shared
from slmkit.tasks.scorers import make_scorer, score_rows
from tests.tasks_helpers import (
    GGUF_NAME,
    single_thread,  # noqa: F401
    smol_tokenizer,
    smollm2_dir,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]


def test_prefix_sharing_is_exact_on_the_real_teacher():
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir(), gguf_file=GGUF_NAME, dtype=torch.float32).eval()
    scorer = make_scorer(model, smol_tokenizer(), TaskConfig(chat_template=True, verbalizers=["No", "Yes"]))
    items = ["os.path.join(a, *p)", "math.sqrt(x, /)", "json.loads(s)", "shutil.rmtree(path)", "heapq.nlargest(n, it)"]
    rows = [ScoringRow(ctx, it, None, ctx) for ctx in ("Join two or more pathname components.",
                                                       "Return the square root of x.") for it in items]
    independent, shared = score_rows(scorer, rows, batch_size=10), score_rows_shared(scorer, rows)
    assert torch.max(torch.abs(independent.softmax(-1) - shared.softmax(-1))).item() < 1e-4
    assert torch.max(torch.abs(independent - shared)).item() < 1e-3  # logits are O(10): 1e-4 relative
    assert independent.softmax(-1)[:, 1].std().item() > 1e-3  # scores differ by item
