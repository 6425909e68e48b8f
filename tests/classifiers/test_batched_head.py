"""The hand-written batched head: gradients equal autograd's, copies are independent, it learns."""
import pytest
import torch

from tailmix.classifiers.batched_head import HEAD_LOSSES, BatchedHead, loss_terms


def _data(k=2, n=40, d=5, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(k, n, d, generator=g)
    y = torch.randint(0, c, (k, n), generator=g)
    return x, y


@pytest.mark.parametrize("hidden", [0, 7])
@pytest.mark.parametrize("loss", HEAD_LOSSES)
def test_gradients_match_autograd(hidden, loss):
    x, y = _data()
    head = BatchedHead(2, 5, 3, hidden=hidden, lr=0.1, weight_decay=0.0)
    head.reset([torch.Generator().manual_seed(i) for i in range(2)])
    counts = torch.stack([torch.bincount(y[i], minlength=3) for i in range(2)])
    offset, cw = loss_terms(loss, counts)
    weight = torch.ones(2, 40)
    weight[1, 30:] = 0  # padding rows must not count
    params = [p.clone().requires_grad_(True) for p in head.params]
    z = x @ params[0] + params[1] if hidden == 0 else \
        (x @ params[0] + params[1]).clamp_min(0) @ params[2] + params[3]
    logp = torch.log_softmax(z + offset.unsqueeze(1), 2)
    nll = -logp.gather(2, y.unsqueeze(-1)).squeeze(-1)
    w = weight * torch.gather(cw, 1, y)
    per_copy = (nll * w / w.sum(1, keepdim=True)).sum(1)
    per_copy.sum().backward()
    loss, grads = head.loss_and_grads(x, y, weight, offset=offset, class_weight=cw)
    assert torch.allclose(loss, per_copy.detach(), atol=1e-6)
    for g, q in zip(grads, params):
        assert torch.allclose(g, q.grad, atol=1e-6)


def test_copies_are_independent_of_each_other():
    x, y = _data(k=3)
    full = BatchedHead(3, 5, 3, hidden=4)
    full.reset([torch.Generator().manual_seed(i) for i in range(3)])
    full.train_epochs(x, y, torch.ones(3, 40), 5)
    single = BatchedHead(1, 5, 3, hidden=4)
    single.reset([torch.Generator().manual_seed(1)])
    single.train_epochs(x[1:2], y[1:2], torch.ones(1, 40), 5)
    for a, b in zip(full.params, single.params):
        assert torch.allclose(a[1], b[0], atol=1e-6)


def test_learns_separable_data_and_resets():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (1, 300), generator=g)
    x = torch.nn.functional.one_hot(y, 3).float() * 3 + 0.3 * torch.randn(1, 300, 3, generator=g)
    head = BatchedHead(1, 3, 3)
    head.reset([torch.Generator().manual_seed(0)])
    head.train_epochs(x, y, torch.ones(1, 300), 50)
    assert (head.logits(x).argmax(2) == y).float().mean() > 0.95
    head.reset([torch.Generator().manual_seed(0)])
    fresh = BatchedHead(1, 3, 3)
    fresh.reset([torch.Generator().manual_seed(0)])
    for a, b in zip(head.params, fresh.params):
        assert torch.equal(a, b)


def test_unknown_loss_says_what_to_use():
    with pytest.raises(ValueError, match="pixel"):
        loss_terms("focal", torch.ones(1, 3))


@pytest.mark.parametrize("hidden", [0, 6])
def test_training_equals_torch_adam_per_copy_even_when_copies_reset_at_different_times(hidden):
    """Each copy follows torch.optim.Adam (L2 on weights only) on its own rows, with its own step count."""
    x, y = _data(k=2, n=30, d=4, c=3)
    wd, lr = 1e-2, 0.05
    head = BatchedHead(2, 4, 3, hidden=hidden, lr=lr, weight_decay=wd)
    head.reset([torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)])
    head.train_epochs(x, y, torch.ones(2, 30), 3)
    head.reset([torch.Generator().manual_seed(7)], [0])  # copy 0 restarts: its Adam step count is 0 again
    head.train_epochs(x, y, torch.ones(2, 30), 4)

    for copy, seed, epochs in ((0, 7, [4]), (1, 1, [3, 4])):
        ref = BatchedHead(1, 4, 3, hidden=hidden)
        ref.reset([torch.Generator().manual_seed(seed)])
        params = [p[0].clone().requires_grad_(True) for p in ref.params]  # W (D, O), b (1, O), ...
        opt = torch.optim.Adam([{"params": params[0::2], "weight_decay": wd},
                                {"params": params[1::2], "weight_decay": 0.0}], lr=lr)
        for _ in range(sum(epochs)):
            z = x[copy] @ params[0] + params[1]
            if hidden:
                z = z.clamp_min(0) @ params[2] + params[3]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(z, y[copy]).backward()
            opt.step()
        for got, want in zip(head.params, params):
            assert torch.allclose(got[copy], want.detach(), atol=1e-5)


@pytest.mark.parametrize("hidden", [0, 6])
def test_cosine_schedule_equals_torch_adam_with_cosine_rates_per_copy(hidden):
    """lr_schedule='cosine': Adam step t of a copy (since its reset) uses lr * (1 + cos(pi t / T)) / 2, each copy
    on its own clock (here copy 0 restarts mid-way, so the copies step at different rates in one call)."""
    import math

    x, y = _data(k=2, n=30, d=4, c=3)
    wd, lr, total = 1e-2, 0.05, 8
    head = BatchedHead(2, 4, 3, hidden=hidden, lr=lr, weight_decay=wd, lr_schedule="cosine", total_steps=total)
    assert head.learning_rates() == [lr, lr]
    head.reset([torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)])
    head.train_epochs(x, y, torch.ones(2, 30), 3)
    head.reset([torch.Generator().manual_seed(7)], [0])
    head.train_epochs(x, y, torch.ones(2, 30), 5)
    # copy 1 has taken all 8 steps: past the end the rate stays at the floor, 0
    assert head.learning_rates()[1] == pytest.approx(0.0, abs=1e-12)
    assert head.learning_rates()[0] == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * 5 / total)))

    for copy, seed, steps in ((0, 7, 5), (1, 1, 8)):
        ref = BatchedHead(1, 4, 3, hidden=hidden)
        ref.reset([torch.Generator().manual_seed(seed)])
        params = [p[0].clone().requires_grad_(True) for p in ref.params]
        opt = torch.optim.Adam([{"params": params[0::2], "weight_decay": wd},
                                {"params": params[1::2], "weight_decay": 0.0}], lr=lr)
        for t in range(steps):
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * t / total))
            z = x[copy] @ params[0] + params[1]
            if hidden:
                z = z.clamp_min(0) @ params[2] + params[3]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(z, y[copy]).backward()
            opt.step()
        for got, want in zip(head.params, params):
            assert torch.allclose(got[copy], want.detach(), atol=1e-5)


def test_lr_schedule_is_validated():
    with pytest.raises(ValueError, match="lr_schedule"):
        BatchedHead(1, 3, 3, lr_schedule="linear")
    with pytest.raises(ValueError, match="total_steps"):
        BatchedHead(1, 3, 3, lr_schedule="cosine")


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
@pytest.mark.parametrize("hidden", [0, 7])
def test_a_copied_head_keeps_training(hidden, schedule, how):
    """Pickle stores each tensor's storage on its own: the head's views of its flat buffers (what Adam updates
    and the forward pass reads) must be rebuilt, or an unpickled head trains detached copies and never moves."""
    import copy
    import pickle

    x, y = _data()
    head = BatchedHead(2, 5, 3, hidden=hidden, lr=0.1, lr_schedule=schedule, total_steps=20)
    head.reset([torch.Generator().manual_seed(i) for i in range(2)])
    head.train_epochs(x, y, torch.ones(2, 40), 2)  # mid-training: Adam moments and step counts set
    twin = pickle.loads(pickle.dumps(head)) if how == "pickle" else copy.deepcopy(head)
    before = twin.flat.clone()
    for h in (head, twin):
        h.train_epochs(x, y, torch.ones(2, 40), 3)
    assert not torch.equal(twin.flat, before)
    for a, b in zip(head.state_dict().values(), twin.state_dict().values()):
        assert all(torch.equal(u, v) for u, v in zip(a, b)) if isinstance(a, list) else torch.equal(a, b)
    assert torch.equal(head.predict(x), twin.predict(x))
    assert twin._w[0].untyped_storage().data_ptr() == twin.flat.untyped_storage().data_ptr()
