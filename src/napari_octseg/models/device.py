"""Device choice: CUDA, else MPS, else CPU."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.errors import InputError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _available() -> list[str]:
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found.insert(0, "cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.insert(0, "mps")
    return found


def select_device(name: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device for ``name`` (``auto`` prefers CUDA, then MPS, then CPU).

    Raises
    ------
    InputError
        If the named device does not exist or is not available on this machine.
    """
    import torch

    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    base = name.split(":")[0]
    if base not in DEVICE_CHOICES:
        raise InputError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if "mps" in _available():
            return torch.device("mps")
        return torch.device("cpu")
    if base not in _available():
        raise InputError(f"device {name!r} is not available here (available: {', '.join(_available())})")
    return torch.device(name)
