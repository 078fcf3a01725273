"""The quantile LSTM (torch; training and export only, never imported at run time).

Input: the last hour as a sequence of per-minute channels, plus static features (the peaks of the
target minutes one day, two hours and one hour earlier, the last 10 s; no clock). Output:
``[N, H, Q]`` ratios peak / level. The quantiles cannot cross: the head predicts p50 (softplus, so
positive) and non-negative increments (softplus) that are summed on top, so p50 <= p90 <= p99 holds
for every input, in the ONNX file too.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


class QuantileLSTM(nn.Module):
    def __init__(
        self, n_seq: int, n_static: int, horizon: int, n_quantiles: int, hidden: int = 48, layers: int = 1
    ) -> None:
        super().__init__()
        self.horizon, self.n_quantiles = horizon, n_quantiles
        self.lstm = nn.LSTM(n_seq, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden + n_static, 64), nn.ReLU(), nn.Linear(64, horizon * n_quantiles))

    def init_output(self, typical_ratio: float) -> None:
        """Start p50 at the typical training ratio and the increments small, so early epochs are sane."""
        last = self.head[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.weight.mul_(0.1)
            bias = last.bias.view(self.horizon, self.n_quantiles)
            bias[:, 0] = float(torch.log(torch.expm1(torch.tensor(typical_ratio))))
            bias[:, 1:] = -2.0

    def forward(self, seq: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(seq)
        z = self.head(torch.cat((h[-1], static), dim=1)).view(-1, self.horizon, self.n_quantiles)
        base = F.softplus(z[..., :1])
        steps = F.softplus(z[..., 1:])
        return torch.cat((base, base + torch.cumsum(steps, dim=-1)), dim=-1)


def pinball(pred: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss over valid (weight > 0) targets; pred ``[N, H, Q]``, y and weight ``[N, H]``."""
    diff = y.unsqueeze(-1) - pred
    loss = torch.maximum(quantiles * diff, (quantiles - 1) * diff)
    w = weight.unsqueeze(-1)
    return (loss * w).sum() / (w.sum() * pred.shape[-1]).clamp_min(1e-9)
