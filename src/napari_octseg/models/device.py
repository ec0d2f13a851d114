"""Device choice: CUDA, else MPS, else CPU."""

from __future__ import annotations

import re
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
    name = (name or "auto").strip().lower()
    match = re.fullmatch(r"(auto|cpu|cuda|mps)(?::(\d{1,3}))?", name)
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise InputError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")
    base = match.group(1)
    if match.group(2) is not None and torch.cuda.is_available() and int(match.group(2)) >= torch.cuda.device_count():
        raise InputError(f"device {name!r} does not exist (this machine has {torch.cuda.device_count()} CUDA devices)")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if "mps" in _available():
            return torch.device("mps")
        return torch.device("cpu")
    if base not in _available():
        raise InputError(f"device {name!r} is not available here (available: {', '.join(_available())})")
    return torch.device(name)
