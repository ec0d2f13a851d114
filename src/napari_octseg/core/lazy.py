"""Lazy package attributes (PEP 562): public names imported from their submodule on first use.

``models`` and ``learning`` export names whose submodules import torch; the ``octseg --help``, ``info``,
``thickness`` and ``evaluate`` commands import the packages for numpy-only names and must not pay for it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any


def lazy_exports(
    namespace: MutableMapping[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's module-level ``__getattr__`` and ``__dir__`` serving ``exports`` lazily.

    Parameters
    ----------
    namespace
        The package's ``globals()``: a loaded name is cached there, so it is imported once.
    exports
        Public name -> the submodule (relative to the package) that defines it.

    Returns
    -------
    tuple
        ``(__getattr__, __dir__)``, to assign at module level.
    """
    package = str(namespace["__name__"])

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
