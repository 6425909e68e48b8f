"""LoRAClassAdapters: only adapter weights train, the base stays frozen, adapters change samples."""
import numpy as np
import pytest
import torch

from tailmix.generators import load_generator
from tailmix.generators.ddpm import ClassConditionalDDPM
from tailmix.generators.lora import LoRAClassAdapters, available_targets, tail_classes
from tailmix.generators.sketch import SketchConditionedDDPM
from tests.conftest import make_tiny_dataset


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def setup():
    ds = make_tiny_dataset()
    base = ClassConditionalDDPM(ds.image_shape, ds.num_classes, preset="tiny", batch_size=16).fit(ds, generator=g(0))
    before = {k: v.clone() for k, v in base.unet.state_dict().items()}
    lora = LoRAClassAdapters(base, steps_per_class=8, lr=1e-2).fit(ds, generator=g(1))
    return ds, base, before, lora


def test_default_classes_are_the_tail_below_the_median(setup):
    ds, _, _, lora = setup
    assert tail_classes(np.array([24, 10, 4])) == [2]
    assert tail_classes(np.array([5, 5, 5])) == []
    assert lora.classes == [2] == lora.adapted_classes
    assert len(lora.loss_history[2]) == 8


def test_default_targets_exist_in_the_unet(setup):
    _, base, _, lora = setup
    # The tiny UNet has no attention: only the resnet convolutions and time projections qualify.
    assert lora.target_modules == ["conv1", "conv2", "time_emb_proj"] == available_targets(base.unet)


def test_training_changes_only_adapter_weights_and_leaves_the_base_alone(setup):
    _, base, before, lora = setup
    for k, v in base.unet.state_dict().items():
        assert torch.equal(v, before[k]), k
    trained = dict(lora.model.named_parameters())
    lora_b = [p for n, p in trained.items() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # lora_B starts at zero; training moved it
    frozen = {n: p for n, p in trained.items() if "lora_" not in n}
    for name, p in frozen.items():
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(p.detach(), before[key]), name
        assert not p.requires_grad


def test_adapter_changes_samples_of_its_class_only(setup):
    _, base, _, lora = setup
    adapted = lora.sample(2, 4, generator=g(3))
    assert adapted.shape == (4, 8, 8, 1) and adapted.dtype == np.uint8
    assert not np.array_equal(adapted, base.sample(2, 4, generator=g(3)))
    np.testing.assert_array_equal(lora.sample(0, 4, generator=g(3)), base.sample(0, 4, generator=g(3)))
    np.testing.assert_array_equal(adapted, lora.sample(2, 4, generator=g(3)))


def test_two_adapters_are_separate(setup):
    ds, base, _, _ = setup
    both = LoRAClassAdapters(base, classes=[1, 2], steps_per_class=4, lr=1e-2).fit(ds, generator=g(1))
    assert both.adapted_classes == [1, 2]
    names = {n.split(".")[-2] for n, _ in both.model.named_parameters() if "lora_A" in n}
    assert names == {"class_1", "class_2"}
    assert not np.array_equal(both.sample(1, 3, generator=g(0)), base.sample(1, 3, generator=g(0)))


def test_save_load_round_trip(setup, tmp_path):
    _, base, _, lora = setup
    lora.save(tmp_path / "lora")
    loaded = load_generator(tmp_path / "lora")
    assert isinstance(loaded, LoRAClassAdapters) and loaded.config() == lora.config()
    for c in (0, 2):
        np.testing.assert_array_equal(loaded.sample(c, 3, generator=g(7)), lora.sample(c, 3, generator=g(7)))
    # The base can be referenced instead of copied.
    base.save(tmp_path / "base")
    lora.save(tmp_path / "ref", base_path=tmp_path / "base")
    assert not (tmp_path / "ref" / "base").exists()
    ref = LoRAClassAdapters.load(tmp_path / "ref")
    np.testing.assert_array_equal(ref.sample(2, 3, generator=g(7)), lora.sample(2, 3, generator=g(7)))


def test_fit_trains_an_unfitted_base_first():
    ds = make_tiny_dataset()
    base = ClassConditionalDDPM(ds.image_shape, ds.num_classes, preset="tiny", batch_size=16)
    lora = LoRAClassAdapters(base, steps_per_class=2).fit(ds, generator=g(0))
    assert base.fitted and lora.fitted
    assert lora.config()["base"]["fit"]["state_digest"] == base.config()["fit"]["state_digest"]


def test_lora_on_a_sketch_base():
    ds = make_tiny_dataset(channels=3)
    base = SketchConditionedDDPM(ds.image_shape, ds.num_classes, preset="tiny", batch_size=16).fit(ds, generator=g(0))
    lora = LoRAClassAdapters(base, steps_per_class=2).fit(ds, generator=g(0))
    assert lora.sample(2, 3, generator=g(1)).shape == (3, 8, 8, 3)
    assert (ds.train_labels[base.last_condition_indices] == 2).all()


def test_bad_inputs(setup, tmp_path):
    ds, base, _, lora = setup
    with pytest.raises(ValueError, match="ClassConditionalDDPM"):
        LoRAClassAdapters("not a model")
    with pytest.raises(ValueError, match="out of range"):
        LoRAClassAdapters(base, classes=[5])
    with pytest.raises(ValueError, match="match no module"):
        LoRAClassAdapters(base, target_modules=["to_q"])
    with pytest.raises(ValueError, match="rank"):
        LoRAClassAdapters(base, rank=0)
    with pytest.raises(ValueError, match="not fitted"):
        LoRAClassAdapters(base).sample(0, 1, generator=g(0))
    with pytest.raises(ValueError, match="out of range"):
        lora.sample(3, 1, generator=g(0))
    other = ClassConditionalDDPM(ds.image_shape, ds.num_classes, preset="tiny", train_steps=1).fit(ds, generator=g(5))
    other.save(tmp_path / "other")
    with pytest.raises(ValueError, match="different base"):
        lora.save(tmp_path / "x", base_path=tmp_path / "other")
