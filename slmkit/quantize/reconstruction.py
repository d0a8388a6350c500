"""The layer-wise objective calibrated quantizers minimise, and the Hessian it needs.

For a linear layer y = x W^T with calibration inputs X [n, in], the output error of a replacement
W_hat is ||X W^T - X W_hat^T||^2 / n = tr((W - W_hat) G (W - W_hat)^T) with G = X^T X / n. GPTQ
(Frantar et al. 2022) writes H = 2 G; we use the same H, so objective() is twice the mean squared
output error per token.
"""

from __future__ import annotations

import torch


def objective(
    w: torch.Tensor, w_hat: torch.Tensor, h: torch.Tensor, dtype: torch.dtype = torch.float64
) -> float:
    """tr((W - W_hat) H (W - W_hat)^T), computed in `dtype` and summed in float64."""
    r = w.to(dtype) - w_hat.to(dtype)
    return float(torch.sum((r @ h.to(dtype)) * r, dtype=torch.float64))


def check_hessian(h: torch.Tensor, in_features: int, name: str) -> None:
    """Refuse a Hessian of the wrong shape or with NaN/inf entries."""
    if tuple(h.shape) != (in_features, in_features):
        raise ValueError(f"{name}: Hessian is {tuple(h.shape)}, expected ({in_features}, {in_features})")
    if not bool(torch.isfinite(h).all()):
        raise ValueError(f"{name}: Hessian has NaN/inf entries (dead layer or non-finite activations)")


class HessianAccumulator:
    """Streams H = 2 X^T X / n over calibration batches; memory is one [in, in] matrix."""

    def __init__(
        self, in_features: int, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
    ):
        self.in_features = in_features
        self.n_samples = 0
        self._sum = torch.zeros(in_features, in_features, dtype=dtype, device=device)

    def add(self, x: torch.Tensor) -> None:
        """Add inputs [..., in]; every leading index (token) is one sample."""
        x = x.detach().reshape(-1, self.in_features).to(self._sum)
        self._sum.addmm_(x.T, x)
        self.n_samples += x.shape[0]

    def hessian(self) -> torch.Tensor:
        if self.n_samples == 0:
            raise ValueError("no calibration samples were added to the Hessian")
        return self._sum * (2.0 / self.n_samples)
