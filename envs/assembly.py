"""Assembly of an env's parts from its settings: the dataset, its synthetic sources and the engine.

:func:`build_engine` is the one place where a :class:`envs.config.RatioEnvConfig` becomes a feature or pixel
engine (``envs.engine``), with the sources resolved and checked against the dataset.
"""
from __future__ import annotations

import numpy as np

from tailmix.envs.config import RatioEnvConfig
from tailmix.envs.engine import FeatureEngine, PixelEngine
from tailmix.envs.protocols import Engine


def resolve_dataset(dataset):
    """A :class:`LongTailDataset` from a dataset object or a ``load_dataset`` spec string."""
    from tailmix.envs.datasets import load_dataset
    from tailmix.io.dataset import LongTailDataset

    if dataset is None:
        dataset = "digits"
    if isinstance(dataset, str):
        return load_dataset(dataset)
    if not isinstance(dataset, LongTailDataset):
        raise ValueError(f"dataset must be a LongTailDataset or a spec string like 'digits'; got "
                         f"{type(dataset).__name__}. Wrap arrays with tailmix.envs.datasets.from_arrays.")
    return dataset


def _validate_source(source, dataset) -> None:
    if source.num_classes is not None and source.num_classes != dataset.num_classes:
        raise ValueError(f"the synthetic source {source.name!r} has {source.num_classes} classes but the dataset has "
                         f"{dataset.num_classes}; build the source (or bank) from this dataset")
    if source.space != "image":
        return
    for c in range(dataset.num_classes):
        pool = source.pool(c)
        if len(pool) and tuple(pool.shape[1:]) != dataset.image_shape:
            raise ValueError(f"synthetic images of class {c} are {tuple(pool.shape[1:])} but the dataset's are "
                             f"{dataset.image_shape}; generate them at the dataset's size")


def resolve_sources(dataset, specs: list, config: RatioEnvConfig) -> list:
    """The env's :class:`envs.sources.Source` list from its specs (``envs.sources.make_source``), validated.

    A string kind that appears again later in the list (two ``"augment"`` pools) draws its pools from
    ``source_seed + j`` for its ``j``-th repeat, so the copies differ; the first is v0's pool.
    """
    from tailmix.envs.sources import make_source

    def kind(spec):  # None is "augment"; objects are never repeats
        return "augment" if spec is None else spec if isinstance(spec, str) else object()

    out = []
    for g, spec in enumerate(specs):
        repeat = sum(1 for s in specs[:g] if kind(s) == kind(spec))
        src = make_source(spec, dataset, pool_size=config.pool_size, seed=config.source_seed + repeat, index=g)
        if src.space == "feature" and config.mode != "feature":
            raise ValueError(f"source {src.name!r} serves features (e.g. 'gaussian' draws virtual features) and "
                             "needs mode='feature'")
        _validate_source(src, dataset)
        out.append(src)
    return out


def source_names(sources: list) -> tuple[str, ...]:
    """Each source's name, made unique by a ``_<g>`` suffix where an earlier source has the same name."""
    names: list[str] = []
    for g, src in enumerate(sources):
        name = str(src.name)
        names.append(f"{name}_{g}" if name in names else name)
    return tuple(names)


def build_engine(dataset, source, config: RatioEnvConfig, num_copies: int = 1) -> tuple[Engine, np.ndarray]:
    """Build the feature or pixel engine and the pool quality ``(C, G)`` for ``dataset`` and its sources.

    ``source`` is one source spec (``envs.sources.make_source``) or a list of them (``G`` sources). The engine
    chooses what to do with each by its declared ``space``: image pools are encoded (feature mode) or trained on
    (pixel mode); feature pools are fitted on the encoder's real train features (feature mode only).
    """
    from tailmix.envs.sources import combined_images

    c = dataset.num_classes
    specs = list(source) if isinstance(source, (list, tuple)) else [source]
    sources = resolve_sources(dataset, specs, config)
    quality = np.array([[float(s.quality(k)) for s in sources] for k in range(c)], np.float32)
    one = len(sources) == 1  # one source: the engines get per-class pools, as in v0
    eval_test = config.eval_split == "test"
    folds = None
    if config.val_folds > 1:  # cross-validated reward: train + val pooled into fixed stratified folds
        from tailmix.envs.folds import CrossValidationFolds

        folds = CrossValidationFolds(dataset.train_labels, dataset.val_labels, c, config.val_folds,
                                     seed=config.source_seed)
    from tailmix.classifiers.device import select_device

    device = select_device(config.device)  # resolves "auto"; torch.device("auto") would not parse
    if config.mode == "pixel":
        pools = [[s.pool(k) for k in range(c)] for s in sources]
        kwargs = dict(backbone=config.backbone, loss=config.loss, epochs=config.epochs, batch_size=config.batch_size,
                      lr=config.learning_rate, device=device, eval_test=eval_test, max_steps=config.max_steps,
                      folds=folds)
        if num_copies > 1:  # several heads: one grouped CNN for all (bit-identical to K single ones on the CPU)
            from tailmix.envs.pixel_batched import BatchedPixelEngine

            return BatchedPixelEngine(dataset, pools[0] if one else pools, num_copies=num_copies, **kwargs), quality
        return PixelEngine(dataset, pools[0] if one else pools, **kwargs), quality
    from tailmix.envs.cache import encoder_cache_dir
    from tailmix.envs.features import encoder_config, fit_encoder

    enc = fit_encoder(dataset, encoder_config(config), cache_dir=encoder_cache_dir(config.cache_dir),
                      synthetic=combined_images(sources),  # crossfit_joint trains on the image pools
                      pool_val=folds is not None)
    real = enc.train_features()  # with folds: the pooled train + val rows, each out of fold
    pools = []
    for g, src in enumerate(sources):
        if src.space == "feature":
            # fitted on the train split only, as a generator is (with folds too: the val rows stay unseen by it)
            fitted = src.fit_features(real[:len(dataset.train_labels)], dataset.train_labels)
            pools.append([np.asarray(fitted.pool(k), np.float32) for k in range(c)])
        else:  # the first source keeps v0's salts, so one source encodes exactly as before
            salt = "pool" if g == 0 else f"pool{g}."
            pools.append([enc.encode(src.pool(k), salt=f"{salt}{k}") for k in range(c)])
    if folds is None:
        val = enc.encode(dataset.val_images, salt="val")
        real_labels = dataset.train_labels
    else:  # the val images are rows of the pooled real block; the engine scores each head on its held-out fold
        val, real_labels = None, folds.labels
    test = enc.encode(dataset.test_images, salt="test") if eval_test else None
    engine = FeatureEngine(real, real_labels, pools[0] if one else pools, val, dataset.val_labels, test,
                           dataset.test_labels if eval_test else None, num_copies=num_copies,
                           hidden=config.hidden if config.head == "mlp" else 0, lr=config.learning_rate,
                           loss=config.loss, epochs=config.epochs, device=device, folds=folds,
                           lr_schedule=config.lr_schedule, total_steps=config.max_steps * config.epochs)
    return engine, quality
