import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tailmix.classifiers.backbones import ResNet18Small, SmallCNN
from tailmix.classifiers.losses import make_loss
from tailmix.classifiers.training import (_epoch_order, encode, predict_logits, random_flip_shift, retrain_head,
                                  train_classifier)


def _model(seed=0, channels=1, classes=3, width=8):
    torch.manual_seed(seed)
    return SmallCNN(channels, classes, width=width)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_small_cnn_overfits_tiny_dataset(tiny_dataset):
    d = tiny_dataset
    model = _model(width=16)
    hist = train_classifier(model, d.train_images, d.train_labels, epochs=20, batch_size=16, lr=3e-3,
                            generator=_gen(), val=(d.val_images, d.val_labels))
    pred = predict_logits(model, d.train_images).argmax(1)
    assert (pred == d.train_labels).mean() == 1.0
    assert len(hist["loss"]) == 20 and len(hist["val_balanced_accuracy"]) == 20
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist["val_balanced_accuracy"][-1] > 0.9
    assert not model.training


@pytest.mark.parametrize("sampler,augment,loss", [("uniform", False, "ce"),
                                                   ("class_balanced", True, "ldam_drw")])
def test_same_generator_same_weights(tiny_dataset, sampler, augment, loss):
    d = tiny_dataset

    def run(seed):
        m = _model()
        train_classifier(m, d.train_images, d.train_labels, epochs=3, batch_size=8, sampler=sampler,
                         augment=augment, loss=loss, generator=_gen(seed))
        return m.state_dict()

    a, b, c = run(1), run(1), run(2)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    # training draws nothing from the global RNG
    m = _model()
    state = torch.random.get_rng_state()
    train_classifier(m, d.train_images, d.train_labels, epochs=1, augment=True, generator=_gen())
    assert torch.equal(state, torch.random.get_rng_state())


def test_set_epoch_is_called_and_custom_module_loss(tiny_dataset):
    d = tiny_dataset
    calls = []

    class Recording(torch.nn.Module):
        def set_epoch(self, epoch, total):
            calls.append((epoch, total))

        def forward(self, logits, targets):
            return F.cross_entropy(logits, targets)

    train_classifier(_model(), d.train_images, d.train_labels, loss=Recording(), epochs=3, generator=_gen())
    assert calls == [(0, 3), (1, 3), (2, 3)]


def test_class_balanced_sampler_balances():
    labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    draws = torch.cat([_epoch_order(labels, "class_balanced", _gen(s)) for s in range(20)])
    share = torch.bincount(labels[draws], minlength=3).double() / len(draws)
    assert torch.allclose(share, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.03)
    order = _epoch_order(labels, "uniform", _gen())
    assert sorted(order.tolist()) == list(range(100))


def test_random_flip_shift_is_a_flip_and_shift():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(1, 2, 8, 8).repeat(6, 1, 1, 1)
    state = torch.random.get_rng_state()
    out = random_flip_shift(x, _gen(3), max_shift=1)
    assert torch.equal(state, torch.random.get_rng_state())
    assert out.shape == x.shape
    padded = F.pad(x[:1], (1, 1, 1, 1), mode="replicate")
    candidates = [img[..., 1 + dy: 9 + dy, 1 + dx: 9 + dx] for img in (padded, padded.flip(3))
                  for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    for i in range(6):
        assert any(torch.equal(out[i:i + 1], c) for c in candidates)
    assert torch.equal(out, random_flip_shift(x, _gen(3), max_shift=1))
    assert not torch.equal(out, x)


def test_predict_and_encode(tiny_dataset):
    d = tiny_dataset
    m = _model()
    m.train()
    logits = predict_logits(m, d.val_images, batch_size=5)
    feats = encode(m, d.val_images, batch_size=7)
    assert logits.dtype == np.float32 and logits.shape == (len(d.val_images), 3)
    assert feats.dtype == np.float32 and feats.shape == (len(d.val_images), m.feature_dim)
    assert m.training  # mode restored
    with torch.no_grad():
        ref = m.eval().fc(torch.from_numpy(feats))
    assert np.allclose(ref.numpy(), logits, atol=1e-5)
    assert predict_logits(m, d.val_images[:0]).shape == (0, 3)
    assert encode(m, d.val_images[:0]).shape == (0, m.feature_dim)


def test_retrain_head_changes_only_fc(tiny_dataset):
    d = tiny_dataset
    m = _model()
    train_classifier(m, d.train_images, d.train_labels, epochs=2, generator=_gen())
    before = {k: v.clone() for k, v in m.state_dict().items()}
    hist = retrain_head(m, d.train_images, d.train_labels, epochs=5, generator=_gen(4))
    assert len(hist["loss"]) == 5
    after = m.state_dict()
    for k in before:
        if k.startswith("fc."):
            assert not torch.equal(before[k], after[k]), k
        else:
            assert torch.equal(before[k], after[k]), k  # BatchNorm statistics included
    assert all(p.requires_grad for p in m.parameters())  # nothing left frozen
    m2 = _model()
    train_classifier(m2, d.train_images, d.train_labels, epochs=2, generator=_gen())
    retrain_head(m2, d.train_images, d.train_labels, epochs=5, generator=_gen(4))
    assert torch.equal(m.fc.weight, m2.fc.weight)


def test_resnet18_small_trains(tiny_rgb_dataset):
    d = tiny_rgb_dataset
    torch.manual_seed(0)
    m = ResNet18Small(3, 3)
    hist = train_classifier(m, d.train_images, d.train_labels, epochs=1, batch_size=13, generator=_gen())
    assert np.isfinite(hist["loss"][0])
    assert predict_logits(m, d.val_images).shape == (len(d.val_images), 3)


def test_bad_inputs(tiny_dataset):
    d = tiny_dataset
    x, y = d.train_images, d.train_labels
    m = _model()
    with pytest.raises(ValueError, match="choose one of"):
        train_classifier(m, x, y, loss="hinge")
    with pytest.raises(ValueError, match="choose one of"):
        train_classifier(m, x, y, sampler="oversample")
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        train_classifier(m, x, np.where(y == 2, 3, y))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        train_classifier(m, x, y - 1)
    with pytest.raises(ValueError, match="one label per image"):
        train_classifier(m, x, y[:-1])
    with pytest.raises(ValueError, match="uint8"):
        train_classifier(m, x.astype(np.float32), y)
    with pytest.raises(ValueError, match="transpose"):
        train_classifier(m, np.ascontiguousarray(np.repeat(x, 8, axis=3).transpose(0, 3, 1, 2)), y)
    with pytest.raises(ValueError, match="epochs"):
        train_classifier(m, x, y, epochs=0)
    with pytest.raises(ValueError, match="one entry per class"):
        train_classifier(m, x, y, class_counts=[1, 2])
    with pytest.raises(ValueError, match="count of 0"):
        train_classifier(m, x, y, loss="balanced_softmax", class_counts=[5, 0, 3])
    with pytest.raises(ValueError, match="val"):
        train_classifier(m, x, y, val=(d.val_images,))
    with pytest.raises(ValueError, match="does not exist|not available"):
        train_classifier(m, x, y, device="cuda:7")
    with pytest.raises(ValueError, match="fc"):
        retrain_head(torch.nn.Sequential(torch.nn.Flatten()), x, y)


def test_zero_count_class_with_ce_is_fine(tiny_dataset):
    # a class absent from the labels: plain CE needs no counts, so training proceeds
    d = tiny_dataset
    keep = d.train_labels != 2
    hist = train_classifier(_model(), d.train_images[keep], d.train_labels[keep], epochs=1, generator=_gen())
    assert np.isfinite(hist["loss"][0])
    loss = make_loss("ce", np.bincount(d.train_labels[keep], minlength=3))
    assert loss.num_classes == 3


@pytest.mark.realdata
def test_small_cnn_learns_breastmnist(data_dir):
    z = np.load(data_dir / "breastmnist.npz")
    x, y = z["train_images"][..., None], z["train_labels"].ravel().astype(np.int64)
    xv, yv = z["val_images"][..., None], z["val_labels"].ravel().astype(np.int64)
    model = _model(channels=1, classes=2, width=16)
    hist = train_classifier(model, x, y, epochs=3, lr=3e-3, generator=_gen(), val=(xv, yv))
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist["val_balanced_accuracy"][-1] > 0.55  # chance is 0.5


def test_a_carried_optimizer_continues_training_exactly(tiny_dataset):
    """Two 1-epoch calls sharing an optimiser (and generator) equal one 2-epoch call: moments carry over."""
    d = tiny_dataset
    one = _model()
    train_classifier(one, d.train_images, d.train_labels, epochs=2, batch_size=8, lr=3e-3, generator=_gen())
    two, g = _model(), _gen()
    opt = torch.optim.AdamW(two.parameters(), lr=3e-3, weight_decay=5e-4)
    for _ in range(2):
        train_classifier(two, d.train_images, d.train_labels, epochs=1, batch_size=8, lr=1.0, generator=g,
                         optimizer=opt)  # lr ignored: the optimiser's own rate applies
    for k, v in one.state_dict().items():
        assert torch.equal(v, two.state_dict()[k]), k
    fresh, g = _model(), _gen()  # the same two calls, each with a new AdamW: the moments restart, the run differs
    for _ in range(2):
        train_classifier(fresh, d.train_images, d.train_labels, epochs=1, batch_size=8, lr=3e-3, generator=g)
    assert any(not torch.equal(v, fresh.state_dict()[k]) for k, v in one.state_dict().items())
    with pytest.raises(ValueError, match="every trainable parameter"):
        train_classifier(_model(), d.train_images, d.train_labels, epochs=1, optimizer=opt)
