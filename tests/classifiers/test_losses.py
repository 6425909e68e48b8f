import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tailmix.classifiers.losses import LOSSES, class_balanced_weights, make_loss, posthoc_logit_adjustment

COUNTS = np.array([100, 20, 5])


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 3, generator=g) * 2
    targets = torch.randint(0, 3, (16,), generator=g)
    targets[:3] = torch.tensor([0, 1, 2])  # every class present
    return logits, targets


@pytest.mark.parametrize("name,counts,kw", [
    ("ce", COUNTS, {}),
    ("logit_adjustment", COUNTS, {"tau": 0.0}),
    ("focal", COUNTS, {"gamma": 0.0}),
    ("balanced_softmax", np.array([7, 7, 7]), {}),
    ("class_balanced", np.array([7, 7, 7]), {}),
    ("class_balanced", np.array([7, 7, 7]), {"base": "focal", "gamma": 0.0}),
    ("ldam_drw", COUNTS, {"max_m": 0.0, "s": 1.0}),
])
def test_equals_cross_entropy_where_theory_says(batch, name, counts, kw):
    logits, targets = batch
    loss = make_loss(name, counts, **kw)
    loss.set_epoch(0, 10)
    assert torch.allclose(loss(logits, targets), F.cross_entropy(logits, targets), atol=1e-6)


@pytest.mark.parametrize("name,kw", [
    ("logit_adjustment", {}), ("focal", {}), ("balanced_softmax", {}), ("class_balanced", {}),
    ("class_balanced", {"base": "focal"}), ("ldam_drw", {}),
])
def test_differs_from_cross_entropy_otherwise(batch, name, kw):
    logits, targets = batch
    loss = make_loss(name, COUNTS, **kw)
    assert not torch.allclose(loss(logits, targets), F.cross_entropy(logits, targets), atol=1e-3)


def test_logit_adjustment_and_balanced_softmax_formulas(batch):
    logits, targets = batch
    prior = torch.tensor(COUNTS / COUNTS.sum(), dtype=torch.float32)
    la = make_loss("logit_adjustment", COUNTS, tau=0.5)(logits, targets)
    assert torch.allclose(la, F.cross_entropy(logits + 0.5 * prior.log(), targets), atol=1e-6)
    # balanced softmax == logit adjustment with tau = 1 (log counts and log prior differ by a constant)
    bs = make_loss("balanced_softmax", COUNTS)(logits, targets)
    assert torch.allclose(bs, make_loss("logit_adjustment", COUNTS)(logits, targets), atol=1e-6)


def test_focal_formula(batch):
    logits, targets = batch
    p = logits.softmax(1)[torch.arange(16), targets]
    expected = (-(1 - p) ** 2 * p.log()).mean()
    assert torch.allclose(make_loss("focal", None)(logits, targets), expected, atol=1e-6)


def test_class_balanced_weights():
    w = class_balanced_weights(COUNTS, beta=0.99)
    raw = (1 - 0.99) / (1 - 0.99 ** COUNTS)
    assert np.allclose(w.numpy(), raw / raw.sum() * 3, atol=1e-6)
    assert w.sum().item() == pytest.approx(3.0)
    assert w[2] > w[1] > w[0]  # rarer classes weigh more
    assert torch.allclose(class_balanced_weights([7, 7, 7]), torch.ones(3))


def test_class_balanced_is_weighted_mean(batch):
    logits, targets = batch
    w = class_balanced_weights(COUNTS)
    expected = (w[targets] * F.cross_entropy(logits, targets, reduction="none")).mean()
    assert torch.allclose(make_loss("class_balanced", COUNTS)(logits, targets), expected, atol=1e-6)


def test_ldam_margins_and_drw(batch):
    logits, targets = batch
    loss = make_loss("ldam_drw", COUNTS)
    m = COUNTS ** -0.25
    assert np.allclose(loss.margins.numpy(), m * 0.5 / m.max(), atol=1e-6)
    assert loss.margins[2].item() == pytest.approx(0.5)
    shifted = logits - F.one_hot(targets, 3) * loss.margins[targets][:, None]
    loss.set_epoch(0, 10)
    assert not loss.reweighting
    assert torch.allclose(loss(logits, targets), F.cross_entropy(30 * shifted, targets), atol=1e-5)
    loss.set_epoch(7, 10)
    assert not loss.reweighting
    loss.set_epoch(8, 10)
    assert loss.reweighting
    expected = F.cross_entropy(30 * shifted, targets, weight=class_balanced_weights(COUNTS))
    assert torch.allclose(loss(logits, targets), expected, atol=1e-5)


def test_every_loss_has_set_epoch_and_backprops(batch):
    logits, targets = batch
    for name in LOSSES:
        loss = make_loss(name, COUNTS)
        loss.set_epoch(3, 4)
        x = logits.clone().requires_grad_(True)
        value = loss(x, targets)
        value.backward()
        assert value.ndim == 0 and torch.isfinite(value) and torch.isfinite(x.grad).all()


def test_losses_accept_half_precision_logits(batch):
    logits, targets = batch
    for name in LOSSES:
        value = make_loss(name, COUNTS)(logits.to(torch.bfloat16), targets)
        assert value.dtype == torch.float32


def test_posthoc_logit_adjustment_numpy_and_torch():
    logits = np.array([[2.0, 1.0, 0.5], [0.0, 0.0, 0.0]], np.float32)
    log_prior = np.log(COUNTS / COUNTS.sum())
    out = posthoc_logit_adjustment(logits, COUNTS, tau=1.0)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert np.allclose(out, logits - log_prior, atol=1e-6)
    # uniform logits now favour the rarest class
    assert out[1].argmax() == 2
    t = posthoc_logit_adjustment(torch.from_numpy(logits), COUNTS, tau=0.5)
    assert torch.is_tensor(t) and np.allclose(t.numpy(), logits - 0.5 * log_prior, atol=1e-6)
    assert np.allclose(posthoc_logit_adjustment(logits, COUNTS, tau=0.0), logits)
    with pytest.raises(ValueError, match="classes"):
        posthoc_logit_adjustment(logits, [1, 2], tau=1.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="balanced_softmax"):
        make_loss("bogus", COUNTS)
    with pytest.raises(ValueError, match="count of 0"):
        make_loss("logit_adjustment", [10, 0, 3])
    with pytest.raises(ValueError, match="count of 0"):
        make_loss("class_balanced", [10, 0, 3])
    with pytest.raises(ValueError, match="needs class_counts"):
        make_loss("ldam_drw", None)
    with pytest.raises(ValueError, match="1-D"):
        make_loss("ce", [[1, 2]])
    with pytest.raises(ValueError, match="keyword"):
        make_loss("focal", COUNTS, tau=1.0)
    with pytest.raises(ValueError, match="gamma"):
        make_loss("focal", COUNTS, gamma=-1)
    with pytest.raises(ValueError, match="logits shaped"):
        make_loss("balanced_softmax", COUNTS)(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    make_loss("ce", [10, 0, 3])  # plain CE does not use counts: zeros are fine
