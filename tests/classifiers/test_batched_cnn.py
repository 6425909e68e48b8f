"""K SmallCNNs trained in one grouped call equal K separate train_classifier runs (bit for bit on the CPU at
SmallCNN's default width, to float tolerance at narrower ones); the device asked for is the one used."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tailmix.classifiers.backbones import SmallCNN
from tailmix.classifiers.batched_cnn import (BatchedAdamW, BatchedSmallCNN, make_copies, predict_logits_batched,
                                             train_batched)
from tailmix.classifiers.device import fixed_threads
from tailmix.classifiers.training import predict_logits, train_classifier

SEEDS = (11, 22, 33)


def _data(k: int, n: int = 40, size: int = 8, channels: int = 3, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8) for _ in range(k)]
    labels = [rng.integers(0, classes, n) for _ in range(k)]
    return images, labels


def _singles(images, labels, width: int, **kw) -> list[SmallCNN]:
    out = []
    for k, (x, y) in enumerate(zip(images, labels)):
        torch.manual_seed(SEEDS[k])
        m = SmallCNN(x.shape[-1], 3, width)
        train_classifier(m, x, y, generator=torch.Generator().manual_seed(100 + k), **kw)
        out.append(m)
    return out


def _batched(images, labels, width: int, **kw) -> BatchedSmallCNN:
    model = make_copies(SEEDS[:len(images)], images[0].shape[-1], 3, width=width)
    train_batched(model, images, labels, generators=[torch.Generator().manual_seed(100 + k) for k in range(len(images))],
                  **kw)
    return model


def _max_diff(model: BatchedSmallCNN, singles: list[SmallCNN]) -> float:
    worst = 0.0
    for k, m in enumerate(singles):
        mine = model.copy_state_dict(k)
        for name, ref in m.state_dict().items():
            if ref.is_floating_point():
                worst = max(worst, float((mine[name] - ref).abs().max()))
    return worst


KW = dict(epochs=2, batch_size=16)


@pytest.mark.parametrize("setting", [dict(), dict(augment=True, sampler="class_balanced", loss="logit_adjustment")])
@pytest.mark.parametrize("copies", [1, 3])
def test_copies_are_bit_identical_to_single_runs_at_the_default_width(copies, setting):
    images, labels = _data(copies)
    with fixed_threads(1):
        singles = _singles(images, labels, 32, **KW, **setting)
        model = _batched(images, labels, 32, **KW, **setting)
        assert _max_diff(model, singles) == 0.0
        logits = predict_logits_batched(model, images[0])
        for k, m in enumerate(singles):
            assert np.array_equal(logits[k], predict_logits(m, images[0]))


def test_narrow_copies_match_single_runs_to_float_tolerance():
    # At width 8 oneDNN's grouped backward for 16-channel groups sums in another order: close, not identical.
    images, labels = _data(3, channels=1)
    with fixed_threads(1):
        singles = _singles(images, labels, 8, **KW)
        model = _batched(images, labels, 8, **KW)
    assert _max_diff(model, singles) < 1e-3


def test_history_is_per_copy_and_training_learns():
    images, labels = _data(2)
    history = train_batched(make_copies([0, 1], 3, 3), images, labels, epochs=3, batch_size=16,
                            generators=[torch.Generator().manual_seed(k) for k in range(2)])
    assert np.asarray(history["loss"]).shape == (3, 2)
    assert np.isfinite(history["loss"]).all()


def test_per_copy_steps_and_rates_match_separate_adamw():
    """Copies reset at different times (vector env with a reset mask): each keeps its own Adam step and rate."""
    torch.manual_seed(0)
    nets = [SmallCNN(1, 3, 8) for _ in range(2)]
    model = BatchedSmallCNN.from_models(nets)
    opt = BatchedAdamW(model.parameters(), 2, lr=0.01, weight_decay=5e-4)
    refs = [torch.optim.AdamW(n.parameters(), lr=0.01, weight_decay=5e-4) for n in nets]
    for t in range(3):
        grads = [{name: torch.randn_like(p) for name, p in n.named_parameters()} for n in nets]
        for n, g, ref in zip(nets, grads, refs):
            if t == 1 and n is nets[1]:
                ref.state.clear()  # copy 1 starts again at step 1
            for name, p in n.named_parameters():
                p.grad = g[name].clone()
            ref.param_groups[0]["lr"] = 0.01 / (1 + t) if n is nets[0] else 0.02
            ref.step()
        if t == 1:
            opt.reset_copies([1])
        opt.lrs = [0.01 / (1 + t), 0.02]
        for name, p in model.named_parameters():
            key = {"fc_weight": "fc.weight", "fc_bias": "fc.bias"}.get(name, name)
            p.grad = torch.cat([g[key].reshape(1, -1) for g in grads]).reshape(p.shape) if name.startswith("fc_") \
                else torch.cat([g[key] for g in grads])
        opt.step()
    for k, n in enumerate(nets):
        mine = model.copy_state_dict(k)
        for name, ref in n.state_dict().items():
            assert torch.equal(mine[name], ref), name


def test_device_is_honoured_and_bad_inputs_are_one_line_errors(monkeypatch):
    images, labels = _data(2)
    gens = [torch.Generator() for _ in range(2)]
    if not torch.cuda.is_available():  # never assumes CUDA: asking for it without one is a clear error
        with pytest.raises(ValueError, match="CUDA is not available"):
            train_batched(make_copies([0, 1], 3, 3), images, labels, device="cuda:0", generators=gens)
    # the device is the one given: a meta-device model is moved to the CPU it is asked to train on
    model = make_copies([0, 1], 3, 3).to("meta")
    assert all(p.device.type == "meta" for p in model.parameters())
    moved = make_copies([0, 1], 3, 3, device="cpu")
    assert all(p.device.type == "cpu" for p in moved.parameters())
    seen = []
    import tailmix.classifiers.batched_cnn as bc
    import tailmix.classifiers.training as tr

    real_select = bc.select_device
    for module in (bc, tr):  # training and inference (the shared mini-batch loop of classifiers.training)
        monkeypatch.setattr(module, "select_device", lambda d: seen.append(d) or real_select(d))
    train_batched(moved, images, labels, epochs=1, batch_size=16, device="cpu", generators=gens)
    predict_logits_batched(moved, images[0], device="cpu")
    assert seen == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="same number of images"):
        train_batched(moved, [images[0], images[1][:-1]], [labels[0], labels[1][:-1]], generators=gens)
    with pytest.raises(ValueError, match="one of each per copy"):
        train_batched(moved, images[:1], labels[:1], generators=gens[:1])
    with pytest.raises(ValueError, match=r"\(K, B, C, H, W\)"):
        moved(torch.zeros(3, 2, 3, 8, 8))
    with pytest.raises(ValueError, match="copies must be a positive integer"):
        BatchedSmallCNN(0, 3, 3)


def test_building_copies_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    make_copies([1, 2], 1, 3, width=8)
    assert torch.equal(torch.rand(3), expected)


def test_the_grouped_path_other_devices_take_matches_to_float_tolerance():
    """Off the CPU the first convolution is one grouped call and AdamW updates whole tensors; run that path here."""
    images, labels = _data(3)
    with fixed_threads(1):
        exact = _batched(images, labels, 32, **KW)
        model = make_copies(SEEDS, 3, 3)
        model.exact = False
        opt = BatchedAdamW(model.parameters(), 3, lr=1e-3, weight_decay=5e-4)
        opt.exact = False
        train_batched(model, images, labels, generators=[torch.Generator().manual_seed(100 + k) for k in range(3)],
                      optimizer=opt, **KW)
    # Adam divides by the gradient's running scale, so a rounding difference can move a weight by up to ~lr
    # per step where the gradient is near 0: compare against a few steps' worth of lr (1e-3).
    singles = [SmallCNN(3, 3) for _ in range(3)]
    for k, m in enumerate(singles):
        m.load_state_dict(exact.copy_state_dict(k))
    assert _max_diff(model, singles) < 5e-3
    np.testing.assert_allclose(predict_logits_batched(model, images[0]), predict_logits_batched(exact, images[0]),
                               atol=1e-3)
