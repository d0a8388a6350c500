"""The benchmark recipe section: closed sets, parsed gates, every field documented."""

import pytest
from pydantic import ValidationError

from slmkit.benchmark.config import BenchmarkConfig, SpeedConfig
from slmkit.benchmark.gates import check_gate, evaluate_gates, failure_lines, failure_message, parse_gate


def test_defaults_validate():
    cfg = BenchmarkConfig()
    assert cfg.method == "standard" and cfg.primary_metric == "top1_agreement"
    assert cfg.speed.batch_sizes == [1, 8]


def test_unknown_backend_is_a_validation_error():
    with pytest.raises(ValidationError, match="tensorrt"):
        BenchmarkConfig(speed={"backends": ["torch_fp32", "tensorrt"]})


@pytest.mark.parametrize("bad", [[], [0], [1, -2]])
def test_batch_sizes_must_be_positive(bad):
    with pytest.raises(ValidationError, match="batch_sizes"):
        SpeedConfig(batch_sizes=bad)


def test_unknown_keys_and_metrics_are_errors():
    with pytest.raises(ValidationError, match="batchsizes"):
        BenchmarkConfig(speed={"batchsizes": [1]})
    with pytest.raises(ValidationError, match="unknown quality metric"):
        BenchmarkConfig(quality=["perplexity", "bleu"])


def test_primary_metric_must_be_produced_by_the_quality_list():
    with pytest.raises(ValidationError, match="primary_metric 'rouge_l'"):
        BenchmarkConfig(quality=["perplexity"], primary_metric="rouge_l")
    assert BenchmarkConfig(quality=["perplexity"], primary_metric="perplexity").primary_metric == "perplexity"
    with pytest.raises(ValidationError, match="teacher_kl"):
        BenchmarkConfig(primary_metric="teacher_kl")


def test_gates_are_parsed_and_checked_against_known_figures():
    cfg = BenchmarkConfig(gates={"quality_retained": ">=0.92", "decode_speedup": "> 4", "perplexity": "<=30"})
    assert cfg.gates["decode_speedup"] == "> 4"
    with pytest.raises(ValidationError, match="not a comparison"):
        BenchmarkConfig(gates={"quality_retained": "at least 0.9"})
    with pytest.raises(ValidationError, match="unknown figure"):
        BenchmarkConfig(gates={"speed": ">=2"})


def test_every_field_has_a_description():
    for model in (BenchmarkConfig, SpeedConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_gate_parsing_and_margins():
    g = parse_gate("decode_speedup", ">=4")
    assert (g.op, g.threshold) == (">=", 4.0)
    assert parse_gate("x", "<1e-2").threshold == pytest.approx(0.01)
    v = check_gate(g, 3.1)
    assert v["passed"] is False and v["margin"] == pytest.approx(-0.9)
    assert check_gate(g, 4.0)["passed"] is True
    assert check_gate(g, None)["passed"] is False  # an unmeasured figure never passes


def test_failure_message_names_figure_and_shortfall_once():
    cfg = BenchmarkConfig(gates={"quality_retained": ">=0.92", "decode_speedup": ">=4", "size_ratio": "<=0.5"})
    verdicts = evaluate_gates(cfg.parsed_gates, {"quality_retained": 0.95, "decode_speedup": 3.1, "size_ratio": None})
    msg = failure_message(failure_lines(verdicts))
    assert "decode_speedup = 3.1, needs >=4 (missed by 0.9)" in msg
    assert "size_ratio was not measured" in msg
    assert "quality_retained" not in msg
    assert msg.count("benchmark gate(s) failed") == 1 and msg.count("\n  - ") == 2
    assert failure_lines(verdicts[:1]) == []
