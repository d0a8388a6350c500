"""The quantize / export recipe schema: discriminated methods, bad values rejected with a reason."""

import pytest
from pydantic import TypeAdapter, ValidationError

from slmkit.export.config import ExportConfig
from slmkit.quantize.config import (
    GgufQuantConfig,
    OnnxOptions,
    OnnxQuantConfig,
    QuantizeConfig,
    TorchaoQuantConfig,
)
from slmkit.quantize.onnx_genai import builder_options

ADAPTER = TypeAdapter(QuantizeConfig)


@pytest.mark.parametrize(
    "raw,cls",
    [({"method": "onnx"}, OnnxQuantConfig), ({"method": "gguf", "type": "Q8_0"}, GgufQuantConfig),
     ({"method": "torchao"}, TorchaoQuantConfig)],
)
def test_method_selects_config_class(raw, cls):
    assert type(ADAPTER.validate_python(raw)) is cls


def test_unknown_precision_is_rejected_with_the_allowed_values():
    with pytest.raises(ValidationError, match="'int4', 'int8', 'fp16' or 'fp32'"):
        ADAPTER.validate_python({"method": "onnx", "precision": "int3"})


def test_fp16_on_cpu_is_rejected():
    with pytest.raises(ValidationError, match="execution_provider: cuda"):
        OnnxOptions(precision="fp16")


def test_unknown_key_is_rejected():
    with pytest.raises(ValidationError, match="extra"):
        ADAPTER.validate_python({"method": "gguf", "typo": 1})


def test_export_formats_unique_and_known():
    with pytest.raises(ValidationError, match="twice"):
        ExportConfig(formats=["hf", "hf"])
    with pytest.raises(ValidationError):
        ExportConfig(formats=["tflite"])
    assert ExportConfig().formats == ["hf", "onnx", "gguf"]


def test_every_field_is_documented():
    from slmkit.quantize.config import GgufOptions, LlmCompressorQuantConfig
    from slmkit.runtimes.config import VerifyConfig

    for cls in (OnnxQuantConfig, GgufQuantConfig, TorchaoQuantConfig, LlmCompressorQuantConfig,
                ExportConfig, VerifyConfig, GgufOptions):
        missing = [n for n, f in cls.model_fields.items() if not f.description]
        assert not missing, f"{cls.__name__}: {missing}"


def test_builder_options():
    assert builder_options(OnnxOptions(precision="int4", block_size=64, accuracy_level=4)) == [
        "block_size=64", "accuracy_level=4"]
    assert builder_options(OnnxOptions(precision="int8", accuracy_level=0)) == ["block_size=32"]
    assert builder_options(OnnxOptions(precision="fp32")) == []
    assert builder_options(OnnxOptions(precision="int4", algo="k_quant_mixed", accuracy_level=0)) == [
        "block_size=32", "algo_config=k_quant_mixed"]
    assert builder_options(OnnxOptions(mixed_precision=["last_matmul:int8"], accuracy_level=0)) == [
        "block_size=32", "matmul_mixed_precision=last_matmul:int8"]
    # the builder cannot gather a tied embedding from an 8-bit lm_head: kept apart, tied again after
    assert builder_options(OnnxOptions(mixed_precision=["last_matmul:int8"], accuracy_level=0), tied_embeddings=True) == [
        "block_size=32", "matmul_mixed_precision=last_matmul:int8", "shared_embeddings=false"]
    assert builder_options(OnnxOptions(accuracy_level=0), tied_embeddings=True) == ["block_size=32"]
