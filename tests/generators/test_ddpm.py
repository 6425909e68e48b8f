"""ClassConditionalDDPM: shapes, seeding, learning, persistence, padding, guidance and errors (tiny preset)."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tailmix.classifiers.data import images_to_tensor
from tailmix.generators import load_generator
from tailmix.generators.ddpm import ClassConditionalDDPM
from tests.conftest import make_tiny_dataset


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny(ds, **kw) -> ClassConditionalDDPM:
    kw = {"preset": "tiny", "batch_size": 16, **kw}
    return ClassConditionalDDPM(ds.image_shape, ds.num_classes, **kw)


@pytest.fixture(scope="module")
def fitted():
    ds = make_tiny_dataset()
    return ds, tiny(ds).fit(ds, generator=g(0))


@pytest.mark.parametrize("channels", [1, 3])
def test_trains_and_samples_dataset_shaped_uint8(channels):
    ds = make_tiny_dataset(channels=channels)
    model = tiny(ds).fit(ds, generator=g(0))
    assert len(model.loss_history) == model.pretrain_steps + model.train_steps > 0
    assert all(np.isfinite(model.loss_history))
    for c in range(ds.num_classes):
        x = model.sample(c, 3, generator=g(1))
        assert x.shape == (3, 8, 8, channels) and x.dtype == np.uint8
    assert model.sample(0, 0, generator=g(1)).shape == (0, 8, 8, channels)
    # The UNet embeds C + 1 labels: the last one is the null class of classifier-free guidance.
    assert model.unet.config.num_class_embeds == ds.num_classes + 1 == model.null_class + 1


def test_same_seed_same_model_and_images_different_seed_different(fitted):
    ds, model = fitted
    twin = tiny(ds).fit(ds, generator=g(0))
    a = model.sample(1, 6, generator=g(5))
    np.testing.assert_array_equal(a, twin.sample(1, 6, generator=g(5)))
    assert model.config() == twin.config()
    assert not np.array_equal(a, model.sample(1, 6, generator=g(6)))
    other = tiny(ds).fit(ds, generator=g(1))
    assert other.config()["fit"]["state_digest"] != model.config()["fit"]["state_digest"]
    assert not np.array_equal(a, other.sample(1, 6, generator=g(5)))


def test_fit_and_sample_leave_the_global_rng_alone(fitted):
    ds, model = fitted
    state = torch.get_rng_state()
    tiny(ds).fit(ds, generator=g(3))
    model.sample(0, 2, generator=g(3))
    assert torch.equal(state, torch.get_rng_state())


def _eval_loss(model, ds) -> float:
    """Noise-prediction MSE on the train images with fixed noise and timesteps."""
    gen = g(123)
    x0 = model._pad(images_to_tensor(ds.train_images))
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, model.num_train_timesteps, (len(x0),), generator=gen)
    y = torch.as_tensor(ds.train_labels)
    with torch.no_grad():
        pred = model.unet(model.train_scheduler.add_noise(x0, noise, t), t, class_labels=y).sample
    return float(F.mse_loss(pred, noise))


def test_training_reduces_the_loss():
    ds = make_tiny_dataset()
    before = tiny(ds, train_steps=0, pretrain_steps=0).fit(ds, generator=g(0))
    after = tiny(ds, train_steps=60, pretrain_steps=0, lr=5e-3).fit(ds, generator=g(0))
    h = np.asarray(after.loss_history)
    assert h[-10:].mean() < 0.6 * h[:10].mean()
    assert _eval_loss(after, ds) < 0.6 * _eval_loss(before, ds)


def test_pretraining_is_unconditional_then_labels_are_used(monkeypatch):
    ds = make_tiny_dataset()
    model = tiny(ds, pretrain_steps=3, train_steps=2, cfg_dropout=0.0)
    seen = []
    original = model._forward

    def spy(unet, x, t, labels, cond):
        seen.append(labels.clone())
        return original(unet, x, t, labels, cond)

    monkeypatch.setattr(model, "_forward", spy)
    model.fit(ds, generator=g(0))
    assert len(seen) == 5
    assert all((lab == model.null_class).all() for lab in seen[:3])
    assert all((lab < ds.num_classes).all() for lab in seen[3:])


def test_save_load_round_trip_gives_identical_samples(fitted, tmp_path):
    ds, model = fitted
    model.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["kind"] == "ddpm" and (tmp_path / "m" / "unet").is_dir()
    for loaded in (ClassConditionalDDPM.load(tmp_path / "m"), load_generator(tmp_path / "m")):
        assert isinstance(loaded, ClassConditionalDDPM)
        np.testing.assert_array_equal(loaded.sample(2, 4, generator=g(9)), model.sample(2, 4, generator=g(9)))
        assert loaded.config() == model.config()
        assert loaded.loss_history == pytest.approx(model.loss_history)


def test_config_is_json_and_captures_what_changes_samples(fitted):
    ds, model = fitted
    cfg = model.config()
    assert json.loads(json.dumps(cfg))["kind"] == "ddpm"
    assert cfg["fit"]["dataset"] == ds.fingerprint() and cfg["fit"]["seed"] == 0
    changed = tiny(ds, guidance_scale=3.0)
    assert changed.hparams() != tiny(ds).hparams()
    unfitted = tiny(ds).config()
    assert unfitted["fit"] is None and unfitted["kind"] == "ddpm"


@pytest.mark.parametrize("size,unet,padded", [
    (7, None, (8, 8)),                                             # 2 levels: factor 2
    (10, {"block_out_channels": [8, 8, 16], "down_block_types": ["DownBlock2D"] * 3,
          "up_block_types": ["UpBlock2D"] * 3}, (12, 12)),         # 3 levels: factor 4
])
def test_odd_sizes_are_padded_for_the_unet_and_cropped_back(size, unet, padded):
    ds = make_tiny_dataset(size=size, channels=3)
    model = tiny(ds, unet=unet, train_steps=2, pretrain_steps=0)
    assert model.padded_size == padded
    model.fit(ds, generator=g(0))
    assert model.sample(0, 2, generator=g(1)).shape == (2, size, size, 3)
    x = images_to_tensor(ds.train_images[:3])
    assert model._pad(x).shape[-2:] == padded
    torch.testing.assert_close(model._crop(model._pad(x)), x)


def test_28x28_with_three_levels_needs_no_padding():
    model = ClassConditionalDDPM((28, 28, 1), 2, preset="tiny",
                                 unet={"block_out_channels": [8, 8, 16], "down_block_types": ["DownBlock2D"] * 3,
                                       "up_block_types": ["UpBlock2D"] * 3})
    assert model.downsample_factor == 4 and model.padded_size == (28, 28)


def test_guidance_runs_conditional_and_null_in_one_batched_forward(fitted, monkeypatch):
    ds, model = fitted
    calls = []
    original = model._forward

    def spy(unet, x, t, labels, cond):
        calls.append(labels.clone())
        return original(unet, x, t, labels, cond)

    monkeypatch.setattr(model, "_forward", spy)
    model.sample(1, 3, generator=g(0))
    assert len(calls) == model.sample_steps
    assert calls[0].tolist() == [1, 1, 1] + [model.null_class] * 3


def test_guidance_scale_and_ddpm_sampler_change_samples():
    ds = make_tiny_dataset()
    base = tiny(ds).fit(ds, generator=g(0))
    a = base.sample(0, 4, generator=g(2))
    for kw in ({"guidance_scale": 1.0}, {"guidance_scale": 0.0}, {"sampler": "ddpm", "num_train_timesteps": 20}):
        other = tiny(ds, **kw).fit(ds, generator=g(0))
        b = other.sample(0, 4, generator=g(2))
        assert b.shape == a.shape and b.dtype == np.uint8
        assert not np.array_equal(a, b), kw


def test_sampling_in_batches_is_deterministic(fitted):
    ds, model = fitted
    small = tiny(ds, sample_batch_size=2)
    small.unet.load_state_dict(model.unet.state_dict())
    small._mark_fitted(ds)
    x = small.sample(0, 5, generator=g(4))
    assert x.shape == (5, 8, 8, 1)
    np.testing.assert_array_equal(x, small.sample(0, 5, generator=g(4)))


def test_progress_bar(fitted, capsys):
    ds, _ = fitted
    tiny(ds, train_steps=2, pretrain_steps=1).fit(ds, generator=g(0), progress=True)
    assert "ddpm fit" in capsys.readouterr().err


def test_bad_inputs_raise_value_errors_that_say_how_to_fix(fitted):
    ds, model = fitted
    with pytest.raises(ValueError, match="fit"):
        tiny(ds).sample(0, 1, generator=g(0))
    with pytest.raises(ValueError, match="0..2"):
        model.sample(3, 1, generator=g(0))
    with pytest.raises(ValueError, match="out of range"):
        model.sample(-1, 1, generator=g(0))
    with pytest.raises(ValueError, match="non-negative"):
        model.sample(0, -1, generator=g(0))
    with pytest.raises(ValueError, match="torch.Generator"):
        model.sample(0, 1, generator=np.random.default_rng(0))
    with pytest.raises(ValueError, match="preset"):
        ClassConditionalDDPM((8, 8, 1), 3, preset="huge")
    with pytest.raises(ValueError, match="sampler"):
        ClassConditionalDDPM((8, 8, 1), 3, sampler="euler")
    with pytest.raises(ValueError, match="image_shape"):
        ClassConditionalDDPM((8, 8), 3)
    with pytest.raises(ValueError, match="image_shape=dataset.image_shape"):
        ClassConditionalDDPM((16, 16, 1), 3, preset="tiny").fit(ds, generator=g(0))
    with pytest.raises(ValueError, match="num_classes=dataset.num_classes"):
        ClassConditionalDDPM((8, 8, 1), 4, preset="tiny").fit(ds, generator=g(0))
    with pytest.raises(ValueError, match="fit"):
        tiny(ds).save("unused")


def test_load_checks_the_folder(tmp_path, fitted):
    with pytest.raises(FileNotFoundError, match="config.json"):
        ClassConditionalDDPM.load(tmp_path / "nothing")
    _, model = fitted
    model.save(tmp_path / "m")
    import shutil

    shutil.rmtree(tmp_path / "m" / "unet")
    with pytest.raises(FileNotFoundError, match="unet"):
        ClassConditionalDDPM.load(tmp_path / "m")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fit_sample_and_move():
    ds = make_tiny_dataset(channels=3)
    model = tiny(ds, device="cuda:0").fit(ds, generator=g(0))
    assert next(model.unet.parameters()).device.type == "cuda"
    x = model.sample(2, 3, generator=g(1))
    assert x.shape == (3, 8, 8, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, model.sample(2, 3, generator=g(1)))
    model.to("cpu")
    assert model.sample(2, 3, generator=g(1)).shape == (3, 8, 8, 3)


def test_user_provided_unet_weights_load_from_a_local_folder(fitted, tmp_path):
    ds, model = fitted
    model.unet.save_pretrained(tmp_path / "user_unet")
    wrapped = ClassConditionalDDPM.from_unet(tmp_path / "user_unet", ds.image_shape, ds.num_classes,
                                             sample_steps=model.sample_steps)
    assert wrapped.fitted and wrapped.unet_kwargs["block_out_channels"] == [8, 16]
    np.testing.assert_array_equal(wrapped.sample(1, 3, generator=g(0)), model.sample(1, 3, generator=g(0)))
    with pytest.raises(ValueError, match="num_classes \\+ 1"):
        ClassConditionalDDPM.from_unet(tmp_path / "user_unet", ds.image_shape, 5)
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        ClassConditionalDDPM.from_unet(tmp_path, ds.image_shape, ds.num_classes)


def test_resume_trains_on_from_loaded_weights(fitted):
    ds, model = fitted
    start = {k: v.clone() for k, v in model.unet.state_dict().items()}
    twin = tiny(ds, train_steps=3, pretrain_steps=0)
    twin.unet.load_state_dict(start)
    twin._mark_fitted(ds)
    twin.fit(ds, generator=g(1), resume=True)
    assert twin.config()["fit"]["resumed_from"] is not None
    changed = [k for k, v in twin.unet.state_dict().items() if not torch.equal(v, start[k])]
    assert changed  # it trained ...
    scratch = tiny(ds, train_steps=3, pretrain_steps=0).fit(ds, generator=g(1))
    # ... from the loaded weights, not from a fresh initialisation
    def dist(m):
        return sum(float((v.float() - start[k].float()).abs().sum()) for k, v in m.unet.state_dict().items())

    assert dist(twin) < 0.2 * dist(scratch)
    with pytest.raises(ValueError, match="resume"):
        tiny(ds).fit(ds, generator=g(0), resume=True)


def _reference_samples(model, class_id: int, n: int, generator: torch.Generator) -> np.ndarray:
    """The sampling loop written plainly (no_grad, a fresh diffusers scheduler per batch): what sample() must equal."""
    import diffusers

    from tailmix.classifiers.data import tensor_to_images

    out = []
    with torch.no_grad():
        for start in range(0, n, model.sample_batch_size):
            b = min(model.sample_batch_size, n - start)
            if model.sampler == "ddpm":
                sched = diffusers.DDPMScheduler.from_config(model.train_scheduler.config)
                sched.set_timesteps(model.num_train_timesteps)
            else:
                sched = diffusers.DDIMScheduler.from_config(model.train_scheduler.config, timestep_spacing="trailing")
                sched.set_timesteps(model.sample_steps)
            x = torch.randn((b, model.image_shape[2], *model.padded_size), generator=generator) \
                * sched.init_noise_sigma
            s = model.guidance_scale
            labels = torch.cat([torch.full((b,), class_id), torch.full((b,), model.null_class)])
            for t in sched.timesteps:
                tt = torch.full((2 * b,), int(t), dtype=torch.long)
                e_cls, e_null = model.unet(torch.cat([x, x]), tt, class_labels=labels).sample.chunk(2)
                eps = e_null + s * (e_cls - e_null)
                step = sched.step(eps, t, x, generator=generator) if model.sampler == "ddpm" \
                    else sched.step(eps, t, x, eta=0.0)
                x = step.prev_sample
            out.append(tensor_to_images(model._crop(x)))
    return np.concatenate(out)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_seeded_samples_equal_the_plain_sampling_loop(fitted, sampler):
    """The sampling path's speed-ups (inference mode, one scheduler per call) leave every seeded image unchanged."""
    ds, model = fitted
    twin = tiny(ds, sample_batch_size=3, sampler=sampler, num_train_timesteps=20)  # a short chain: ddpm takes all
    twin.unet.load_state_dict(model.unet.state_dict())
    twin._mark_fitted(ds)
    assert twin.guidance_scale not in (0.0, 1.0)  # the reference loop runs both guidance halves
    got = twin.sample(2, 7, generator=g(11))  # three batches: 3 + 3 + 1
    np.testing.assert_array_equal(got, _reference_samples(twin, 2, 7, g(11)))


def test_ema_averages_the_weights_without_changing_training_and_sampling_uses_it(fitted, tmp_path):
    ds, model = fitted  # the same settings and seed without an average
    ema = tiny(ds, ema_decay=0.9).fit(ds, generator=g(0))
    raw, avg = ema.raw_state, ema.unet.state_dict()
    # the average draws no random numbers: the last-step weights are exactly those of the model without it
    assert all(torch.equal(raw[k], v) for k, v in model.unet.state_dict().items())
    assert ema.loss_history == model.loss_history
    assert any(not torch.equal(raw[k], v) for k, v in avg.items())  # the averaged weights differ from them
    assert model.raw_state is None
    # sampling (and the state digest) use the averaged weights: a model holding them samples the same images
    holder = tiny(ds)
    holder.unet.load_state_dict(avg)
    holder._mark_fitted(ds)
    np.testing.assert_array_equal(ema.sample(1, 5, generator=g(4)), holder.sample(1, 5, generator=g(4)))
    assert not np.array_equal(ema.sample(1, 5, generator=g(4)), model.sample(1, 5, generator=g(4)))
    assert ema.config()["ema_decay"] == 0.9 and "ema_decay" not in model.config()
    assert ema.config()["fit"]["state_digest"] != model.config()["fit"]["state_digest"]
    ema.save(tmp_path / "m")  # the saved model is the averaged one
    loaded = ClassConditionalDDPM.load(tmp_path / "m")
    assert loaded.ema_decay == 0.9 and loaded.config() == ema.config()
    np.testing.assert_array_equal(loaded.sample(1, 5, generator=g(4)), ema.sample(1, 5, generator=g(4)))
    for bad in (0, 1, 1.5, -0.1, "0.9"):
        with pytest.raises(ValueError, match="ema_decay"):
            tiny(ds, ema_decay=bad)


def test_the_default_ddpm_cache_key_is_unchanged_by_the_ema_option():
    """The README's default digits bank lives under this key; an option left at None must not move it."""
    from tailmix.pipeline import Settings, cache_key, load_data, new_generator

    cfg = Settings(dataset="digits", device="cpu")
    ds = load_data(cfg)
    assert cache_key(ds.fingerprint(), new_generator(cfg, ds).config(), cfg.seed) == "73749980b925b9ee"
