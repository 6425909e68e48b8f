"""Image backbones for small (8x8 to 64x64) images, all with random initial weights (nothing downloads).

Every backbone has the same interface: ``features(x) -> (N, D)`` (the penultimate representation),
``fc`` (the final :class:`torch.nn.Linear`, ``D -> C``), ``feature_dim`` (``D``) and ``forward(x)``
(``fc(features(x))``). Classifier re-training and the env's feature mode rely on it.
"""
from __future__ import annotations

import torch
from torch import nn

BACKBONES = ("small_cnn", "resnet18")


def _check_sizes(in_channels: int, num_classes: int) -> None:
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1 (1 for grey, 3 for RGB), got {in_channels}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    # No conv bias: the BatchNorm shift makes it redundant.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU blocks (two of them stride 2) and global average pooling.

    Cheap enough to fine-tune on a CPU every env step; works on any input of at least 4x4 pixels.

    Args:
        in_channels: Image channels (1 grey, 3 RGB).
        num_classes: Output logits.
        width: Channels of the first block; later blocks use ``2 * width`` and ``4 * width``.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        _check_sizes(in_channels, num_classes)
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.body = nn.Sequential(
            _conv_bn_relu(in_channels, width, 1),
            _conv_bn_relu(width, 2 * width, 2),
            _conv_bn_relu(2 * width, 2 * width, 1),
            _conv_bn_relu(2 * width, 4 * width, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.feature_dim = 4 * width
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` images -> ``(N, feature_dim)`` pooled features."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class ResNet18Small(nn.Module):
    """torchvision ResNet-18 (``weights=None``) adapted to small images.

    The ImageNet stem (7x7 stride-2 conv + max-pool) would shrink a 28x28 image to 7x7 before the first
    block; a 3x3 stride-1 conv and no max-pool keep the resolution, as in CIFAR ResNets.

    Args:
        in_channels: Image channels (1 grey, 3 RGB).
        num_classes: Output logits.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        _check_sizes(in_channels, num_classes)
        from torchvision.models import resnet18

        net = resnet18(weights=None, num_classes=num_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision does
        net.maxpool = nn.Identity()
        # fc lives on this module, not inside ``body``, so its parameters appear once (as ``fc.*``).
        self.fc = net.fc
        net.fc = nn.Identity()
        self.body = net
        self.feature_dim = self.fc.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` images -> ``(N, 512)`` pooled features."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def make_backbone(name: str, in_channels: int, num_classes: int, **kwargs) -> nn.Module:
    """Build a backbone by name.

    Args:
        name: One of :data:`BACKBONES`.
        in_channels: Image channels.
        num_classes: Output logits.
        **kwargs: Passed to the backbone (e.g. ``width`` for ``small_cnn``).

    Initial weights come from torch's global RNG, like every ``nn.Module``; seed it (or restore its state
    afterwards) for reproducible initialisation.
    """
    builders = {"small_cnn": SmallCNN, "resnet18": ResNet18Small}
    if name not in builders:
        raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")
    try:
        return builders[name](in_channels, num_classes, **kwargs)
    except TypeError as exc:
        raise ValueError(f"bad keyword arguments for backbone {name!r}: {exc}") from None
