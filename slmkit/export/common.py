"""Pieces the quantize and export stages share: precision classes and verification bookkeeping."""

from __future__ import annotations

from pathlib import Path

from slmkit.export.config import VerifyConfig
from slmkit.export.verify import Reference, reference_logits, verify_artifact

# how strictly an export is compared with its source (see VerifyConfig)
_FULL = {"fp32": "fp32", "F32": "fp32", "fp16": "fp16", "F16": "fp16", "bf16": "fp16"}


def precision_class(precision: str) -> str:
    """fp32 | fp16 | quantized, for an ONNX precision or a GGUF type name."""
    return _FULL.get(precision, "quantized")


class Verifier:
    """Computes the source model's reference once, then checks each written artifact against it."""

    def __init__(self, source_dir: Path, cfg: VerifyConfig, reporter=None):
        self.source_dir, self.cfg, self.reporter = Path(source_dir), cfg, reporter
        self._reference: Reference | None = None

    @property
    def reference(self) -> Reference:
        if self._reference is None:
            self._reference = reference_logits(self.source_dir, self.cfg)
        return self._reference

    def check(self, kind: str, path: Path, precision: str) -> dict:
        result = verify_artifact(kind, path, self.reference, precision_class(precision), self.cfg, self.reporter)
        if self.reporter is not None:
            self.reporter.info(
                f"verified {kind} in {result['runtime']}: top-1 {result['top1_agreement']:.3f}, "
                f"max |logit diff| {result['max_abs_logit_diff']:.3g}"
            )
        return result
