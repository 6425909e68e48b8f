"""Classification heads on top of fixed features (autograd versions; the env's hot path uses
``classifiers.batched_head`` instead)."""
from __future__ import annotations

import torch
from torch import nn


class LinearHead(nn.Module):
    """A single linear layer ``in_dim -> num_classes``.

    Args:
        in_dim: Feature dimension.
        num_classes: Output logits.
    """

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        if in_dim < 1 or num_classes < 2:
            raise ValueError(f"need in_dim >= 1 and num_classes >= 2, got {in_dim} and {num_classes}")
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class MLPHead(nn.Module):
    """One hidden ReLU layer: ``in_dim -> hidden -> num_classes``.

    Args:
        in_dim: Feature dimension.
        num_classes: Output logits.
        hidden: Hidden width.
    """

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        if in_dim < 1 or num_classes < 2 or hidden < 1:
            raise ValueError(f"need in_dim >= 1, num_classes >= 2 and hidden >= 1, got {in_dim}, "
                             f"{num_classes} and {hidden}")
        self.hidden = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True))
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.hidden(x))
