import pytest
import torch

from tailmix.classifiers.device import autocast, autocast_dtype, fixed_threads, select_device, visible_devices


def test_auto_and_cpu():
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert select_device("auto") == expected
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(torch.device("cpu")) == torch.device("cpu")


def test_missing_gpu_is_a_value_error_listing_devices():
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match="cpu|cuda:0"):
        select_device(f"cuda:{n + 1}")
    if n == 0:
        with pytest.raises(ValueError, match="not available"):
            select_device("cuda")


def test_bad_device_string():
    with pytest.raises(ValueError, match="cannot parse"):
        select_device("gpu-please")


def test_visible_devices():
    devs = visible_devices()
    assert devs and all(isinstance(d, torch.device) for d in devs)
    if not torch.cuda.is_available():
        assert devs == [torch.device("cpu")]
    else:
        assert devs == [torch.device("cuda", i) for i in range(torch.cuda.device_count())]


def test_autocast_is_null_on_cpu():
    assert autocast_dtype("cpu") is None
    with autocast(torch.device("cpu")):
        y = torch.nn.Linear(4, 2)(torch.ones(1, 4))
    assert y.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_autocast_on_cuda_uses_half_precision():
    lin = torch.nn.Linear(4, 2).cuda()
    with autocast("cuda:0"):
        y = lin(torch.ones(1, 4, device="cuda"))
    assert y.dtype in (torch.bfloat16, torch.float16)


def test_fixed_threads_restores_even_on_error():
    before = torch.get_num_threads()
    target = 2 if before != 2 else 1
    with fixed_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with fixed_threads(target):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with fixed_threads(None):
        assert torch.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_fixed_threads_rejects_bad_counts(bad):
    with pytest.raises(ValueError):
        with fixed_threads(bad):
            pass
