"""A package's public names, imported from their submodules on first use (PEP 562).

The extras' packages re-export names from submodules that pull in heavy imports (sqlite3, the
stemmer, httpx clients, pydantic models); importing the package itself must stay cheap, because
every command imports it and most never use those parts.

    __getattr__, __dir__ = lazy_exports(__name__, {"LocalKnowledgeBase": "local_kb"}, __all__)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import import_module
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, modules: Mapping[str, str], public: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module `__getattr__` and `__dir__` of `package`: name → the submodule that defines it."""
    names = list(public)

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f"{package}.{module}"), name)
        vars(sys.modules[package])[name] = value  # the next lookup does not come here
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__
