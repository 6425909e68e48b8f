"""Explicit device choice, mixed precision and thread pinning.

Nothing here assumes CUDA exists: ``"auto"`` falls back to the CPU, and naming a GPU that is not there
is a user error with a message listing what is.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def visible_devices() -> list[torch.device]:
    """Every CUDA device this process can see (after ``CUDA_VISIBLE_DEVICES``), or ``[cpu]`` when none."""
    if torch.cuda.is_available():
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return [torch.device("cpu")]


def select_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve ``device`` to a concrete, existing :class:`torch.device`.

    Args:
        device: ``"auto"`` (``cuda:0`` when CUDA is available, else ``cpu``), ``"cpu"``, ``"cuda"``
            (meaning ``cuda:0``), ``"cuda:<i>"``, ``"mps"``, or a :class:`torch.device`.

    Raises:
        ValueError: the device is malformed or does not exist on this machine.
    """
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"cannot parse device {device!r} ({exc}); use 'auto', 'cpu', 'cuda' or 'cuda:<i>'") \
            from None
    existing = ", ".join(str(d) for d in visible_devices())
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for CUDA, but CUDA is not available here (visible "
                             f"devices: {existing}); pass device='cpu' or 'auto'")
        index = 0 if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) "
                             f"visible ({existing}); pick one of them or pass 'auto'")
        return torch.device("cuda", index)
    if dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"device {device!r}: MPS is not available here (visible devices: {existing})")
        return dev
    raise ValueError(f"unsupported device type {dev.type!r}; use 'auto', 'cpu' or 'cuda:<i>' "
                     f"(visible devices: {existing})")


def autocast_dtype(device: str | torch.device) -> torch.dtype | None:
    """The mixed-precision dtype :func:`autocast` uses on ``device`` (``None``: full precision)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: str | torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bf16, or fp16 where bf16 is unsupported); a null context elsewhere.

    CPU autocast is left off on purpose: on CPUs it is slower for small convs and changes results.
    fp16 needs a gradient scaler (``torch.amp.GradScaler``); bf16 does not.
    """
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


#: Generator precisions (``--precision``): ``auto`` is bf16 on GPUs that support it, else fp16 (with a gradient
#: scaler when training); ``fp32`` turns mixed precision off. The CPU always runs fp32.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def precision_dtype(device: str | torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (``None``: full precision, always off CUDA)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if torch.device(device).type != "cuda" or precision == "fp32" or not torch.cuda.is_available():
        return None
    if precision == "auto":
        return autocast_dtype(device)
    return torch.bfloat16 if precision == "bf16" else torch.float16


def precision_autocast(device: str | torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """Autocast to :func:`precision_dtype` on CUDA; a null context in full precision."""
    dtype = precision_dtype(device, precision)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type="cuda", dtype=dtype)


def grad_scaler(device: str | torch.device, precision: str = "auto") -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler("cuda", enabled=precision_dtype(device, precision) == torch.float16)


@contextlib.contextmanager
def fixed_threads(n: int | None, *, blas: bool = True) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous count afterwards.

    Torch CPU results change with the thread count (a prototype's RetinaMNIST pixel-mode test balanced accuracy:
    0.316 at 1 thread, 0.342 at 2), so reproducible runs pin it.

    Args:
        n: Intra-op thread count, or ``None`` to leave it unchanged.
        blas: Also limit numpy's BLAS (through threadpoolctl, ~40 us per block). Hot paths that do no numpy
            linear algebra (an env step) pass ``False``.
    """
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"thread count must be a positive int or None, got {n!r}")
    previous = torch.get_num_threads()
    if previous != n:
        torch.set_num_threads(n)
    controller = _blas_controller() if blas else None
    limiter = controller.limit(limits=n) if controller is not None else contextlib.nullcontext()
    try:
        with limiter:  # numpy's BLAS too: e.g. the Gaussian source does numpy maths in the same block
            yield
    finally:
        if previous != n:
            torch.set_num_threads(previous)


_BLAS = []


def _blas_controller():
    """A cached threadpoolctl controller (building one costs ~0.4 ms; limiting with it ~8 us)."""
    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS.append(ThreadpoolController())
        except ImportError:  # threadpoolctl comes with scikit-learn; without it only torch is pinned
            _BLAS.append(None)
    return _BLAS[0]
