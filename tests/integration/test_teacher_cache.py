"""The compact teacher cache: streamed rows equal the teacher's, students trained from int8 and fp32
caches agree, and one cache serves several recipes (content-addressed, shown by `slmkit runs`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distill_helpers import VOCAB, examples, tiny_llama

from slmkit.cli import app
from slmkit.distill import losses as L
from slmkit.distill.config import DistillConfig
from slmkit.distill.teacher_cache import TopKCache, build_cache, topk_rows
from slmkit.distill.trainer import DistillJob, make_batch, teacher_states, train

runner = CliRunner()


def _build(path: Path, teacher, exs, fmt: str, k: int = 32, shard_examples: int = 5) -> TopKCache:
    path.mkdir(parents=True)
    build_cache(path, teacher, exs, pad_id=0, vocab=VOCAB, k=k, temperature=1.0, batch_size=3,
                shard_examples=shard_examples, device=torch.device("cpu"), dtype=torch.float32, format=fmt)
    return TopKCache(path)


def test_streamed_rows_equal_the_teachers_top_k(tmp_path):
    teacher, exs = tiny_llama(3, seed=2).eval(), examples(12)
    want = topk_rows(teacher, exs, pad_id=0, vocab=VOCAB, k=32, temperature=1.0, device="cpu", dtype=torch.float32)
    exact, small = _build(tmp_path / "fp32", teacher, exs, "fp32"), _build(tmp_path / "int8", teacher, exs, "int8")
    assert len(list((tmp_path / "int8").glob("shard-*.safetensors"))) == 3  # 12 examples, 5 per shard
    for i, (idx, logp) in enumerate(want):
        got_idx, got_logp = exact(i)
        # built in batches of 3 here, of 12 above: padding moves the last bits
        assert torch.equal(got_idx, idx.long()) and torch.allclose(got_logp, logp, atol=1e-5)
        q_idx, q_logp = small(i)
        assert torch.equal(q_idx.sort(-1).values, idx.long().sort(-1).values)
        orig = torch.full((idx.shape[0], VOCAB), -torch.inf).scatter(-1, idx.long(), logp)
        assert (orig.gather(-1, q_idx) - q_logp).abs().max() < 0.02
    assert small.bytes_per_token < exact.bytes_per_token / 3


def test_packed_build_rows_equal_one_example_per_row_and_a_plain_log_softmax():
    teacher, exs = tiny_llama(3, seed=2).eval(), examples(9)
    assert make_batch(exs, 0, "cpu", pack=True).tensors["input_ids"].shape[0] < len(exs)  # several per row
    packed = topk_rows(teacher, exs, pad_id=0, vocab=VOCAB, k=8, temperature=2.0, device="cpu", dtype=torch.float32,
                       pack=True)
    for e, (idx, logp) in zip(exs, packed):
        with torch.no_grad():  # the plain reference: this example alone, full log-softmax, top-k
            z = teacher(input_ids=torch.tensor([e.input_ids])).logits[0, :-1].float()
        counted = torch.tensor(e.loss_mask[1:]).bool()
        want_logp, want_idx = torch.log_softmax(z[counted] / 2.0, -1).topk(8, -1)
        assert torch.equal(idx.long(), want_idx) and torch.allclose(logp, want_logp, atol=1e-5)


def _eval_kl(student, teacher, exs) -> float:
    """Full-vocabulary KL(teacher || student) per counted token on ``exs``: the same yardstick for both."""
    b = make_batch(exs, 0, "cpu")
    with torch.no_grad():
        t, _ = teacher_states(teacher, b.tensors, b.sel, [], VOCAB)
        out = student.base_model(input_ids=b.tensors["input_ids"], attention_mask=b.tensors["attention_mask"])
        h = out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])[b.sel]
        s = L.eval_sums(h, student.get_output_embeddings().weight, t, b.targets)
    return s["kl"] / s["tokens"]


def test_students_from_int8_and_fp32_caches_reach_the_same_eval_kl(tmp_path):
    teacher, train_ex, eval_ex = tiny_llama(3, seed=2).eval(), examples(12), examples(6, seed=9)
    kls = {}
    for fmt in ("fp32", "int8"):
        cache = _build(tmp_path / fmt, teacher, train_ex, fmt, k=16)
        cfg = DistillConfig(max_steps=12, batch_size=4, precision="fp32", eval_every=100, checkpoint_every=100,
                            optimizer={"lr": 5e-3})
        job = DistillJob(tiny_llama(2, seed=1), None, train_ex, [], 0, VOCAB, cfg, tmp_path / f"work-{fmt}",
                         topk_train=cache)
        before = _eval_kl(job.student, teacher, eval_ex)
        train(job)
        kls[fmt] = _eval_kl(job.student, teacher, eval_ex)
        assert kls[fmt] < before * 0.9  # it learned something from the cache
    assert kls["int8"] == pytest.approx(kls["fp32"], rel=0.01)


def _recipe(root: Path, name: str, keep: list[int], teacher: Path) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(f"""\
name: {name}
output_dir: {root / "runs"}
teacher: {{model: {teacher}}}
student: {{init: {{from: teacher, keep_layers: {keep}}}}}
data:
  train: {{path: builtin:prompts, max_samples: 6, max_length: 48}}
  eval: {{path: builtin:heldout, max_samples: 3, max_length: 48}}
stages:
  - distill: {{max_steps: 2, batch_size: 2, eval_every: 2, eval_examples: 3, precision: fp32,
               data: offline_teacher, teacher_cache: {{top_k: 16}}}}
""")
    return path


def test_one_cache_serves_two_recipes_and_runs_shows_who_used_it(tmp_path, tiny_llama_dir):
    for name, keep in (("first", [0, 2]), ("second", [1, 3])):
        r = runner.invoke(app, ["distill", str(_recipe(tmp_path, name, keep, tiny_llama_dir))])
        assert r.exit_code == 0, r.output
    runs = tmp_path / "runs"
    assert sorted(p.name for p in (runs / "_shared/teacher-topk").glob("v*")) == ["v1", "v2"]  # train + eval
    details = [json.loads((runs / n / "distill/v1/manifest.json").read_text())["details"] for n in ("first", "second")]
    assert details[0]["teacher_cache"]["train"] == details[1]["teacher_cache"]["train"]
    c = details[0]["teacher_cache"]
    assert c["format"] == "int8" and 0 < c["bytes_per_token"] < 16 * 4
    assert c["teacher_flops_avoided"] > 0
    r = runner.invoke(app, ["runs", str(runs), "--json"])
    rows = {row["id"]: row for row in json.loads(r.output)}
    assert sorted(rows[c["train"]]["used_by"]) == ["first/distill/v1", "second/distill/v1"]
    assert rows["first/distill/v1"]["teacher_cache"] == c["train"]
