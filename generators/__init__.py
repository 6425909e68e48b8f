"""tailmix generators: the pool of synthetic-data generators, their filter and the on-disk bank.

Kinds (see :mod:`generators.base`): ``ddpm`` (class-conditional diffusion), ``lora`` (a LoRA adapter per
class on a DDPM), ``sketch`` (edge-map conditioned DDPM), ``augment`` (classic augmentations) and
``gaussian`` (LMD-style virtual features). Heavy dependencies (diffusers, peft) load only when a class
that needs them is first used, so ``import generators`` stays fast.
"""
from __future__ import annotations

from tailmix.generators.base import (GENERATOR_KINDS, Generator, generator_class, kinds_with, load_generator,
                                     make_generator, register_generator)

__all__ = ["GENERATOR_KINDS", "Generator", "generator_class", "kinds_with", "load_generator", "make_generator",
           "register_generator",
           "ClassConditionalDDPM", "LoRAClassAdapters", "SketchConditionedDDPM", "AugmentationGenerator",
           "GaussianFeatureGenerator"]

_LAZY = {"ClassConditionalDDPM": "ddpm", "LoRAClassAdapters": "lora", "SketchConditionedDDPM": "sketch",
         "AugmentationGenerator": "augment", "GaussianFeatureGenerator": "gaussian"}


def __getattr__(name: str):
    if name in _LAZY:
        return GENERATOR_KINDS[_LAZY[name]]
    raise AttributeError(f"module 'generators' has no attribute {name!r}")
