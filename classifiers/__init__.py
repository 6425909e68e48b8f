"""Classifiers for tailmix: backbones, batched heads, long-tail losses, training loops and fast metrics.

Kept light on purpose: submodules are imported where they are used (``from classifiers.losses import
make_loss``), so ``import classifiers`` does not pull in torchvision.
"""
