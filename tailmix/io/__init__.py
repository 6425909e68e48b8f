"""tailmix's bottom layer: data and I/O helpers every other layer may use, importing none of them.

- :mod:`tailmix.io.dataset`: :class:`LongTailDataset`, the dataset every layer shares (its loaders are in
  :mod:`tailmix.envs.datasets`).
- :mod:`tailmix.io.atomic`: atomic file writes and an advisory file lock (bank shards, caches, run folders,
  results tables).
- :mod:`tailmix.io.leakage`: exact and near copies across a dataset's splits and between synthetic and real
  images.

The layers import downward only: ``io`` -> ``classifiers`` -> ``generators`` -> ``envs`` -> ``agents`` ->
``pipeline`` -> the CLI (``tests/test_layers.py`` checks it).
"""
