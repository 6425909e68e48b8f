import sys

import pytest
import torch

from tailmix.classifiers.backbones import BACKBONES, ResNet18Small, SmallCNN, make_backbone


def test_import_classifiers_does_not_import_torchvision():
    import subprocess

    code = "import tailmix.classifiers, tailmix.classifiers.losses, tailmix.classifiers.metrics, tailmix.classifiers.training, sys; " \
           "print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("size,channels", [(8, 1), (28, 3)])
def test_small_cnn_shapes(size, channels):
    m = SmallCNN(channels, 5, width=8)
    x = torch.randn(3, channels, size, size)
    f = m.features(x)
    assert f.shape == (3, m.feature_dim) == (3, 32)
    assert m(x).shape == (3, 5)
    assert torch.allclose(m(x), m.fc(f))
    assert isinstance(m.fc, torch.nn.Linear)


@pytest.mark.parametrize("size,channels", [(8, 1), (28, 3)])
def test_resnet18_small_shapes(size, channels):
    m = ResNet18Small(channels, 4).eval()
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        f = m.features(x)
        assert f.shape == (2, 512) and m.feature_dim == 512
        assert m(x).shape == (2, 4)
        assert torch.allclose(m(x), m.fc(f))
    assert m.body.conv1.kernel_size == (3, 3) and m.body.conv1.stride == (1, 1)
    assert isinstance(m.body.maxpool, torch.nn.Identity)
    # fc is registered once, as "fc.*", not also inside the body
    keys = m.state_dict().keys()
    assert "fc.weight" in keys and not any(k.startswith("body.fc") for k in keys)


def test_make_backbone():
    assert set(BACKBONES) == {"small_cnn", "resnet18"}
    assert isinstance(make_backbone("small_cnn", 1, 3, width=4), SmallCNN)
    assert make_backbone("small_cnn", 1, 3, width=4).feature_dim == 16
    with pytest.raises(ValueError, match="small_cnn"):
        make_backbone("vgg", 1, 3)
    with pytest.raises(ValueError, match="keyword"):
        make_backbone("small_cnn", 1, 3, depth=3)
    with pytest.raises(ValueError, match="num_classes"):
        make_backbone("small_cnn", 1, 1)
    with pytest.raises(ValueError, match="in_channels"):
        make_backbone("resnet18", 0, 3)
