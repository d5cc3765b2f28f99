"""Feed-forward layer and stochastic depth."""
from __future__ import annotations

import torch
import torch.nn as nn

from mmmila.ops import gelu_linear


class Mlp(nn.Module):
    """``fc1`` (C -> hidden), exact GELU, ``fc2`` (hidden -> C). Tokens (B, N, C) in and out.

    GELU and ``fc2`` run as one op (:func:`mmmila.ops.gelu_linear`), which keeps ``fc1``'s output
    for backward but not GELU's; ``backend`` is that op's, 'auto' | 'torch' | 'triton'.
    """

    def __init__(self, channels: int, hidden_channels: int, backend: str = 'auto') -> None:
        super().__init__()
        self.backend = backend
        self.fc1 = nn.Linear(channels, hidden_channels)
        self.fc2 = nn.Linear(hidden_channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_hidden(self.fc1(x))

    def forward_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """GELU and ``fc2`` on ``fc1``'s output."""
        return gelu_linear(hidden, self.fc2, backend=self.backend)


class DropPath(nn.Module):
    """Drop whole residual branches per sample with probability ``drop_prob`` (training only)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob:.3f}'
