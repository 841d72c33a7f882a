"""The method registry: a leaf module (it imports nothing of gencond but errors), so
any method module registers itself without importing the package."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gencond.errors import GencondError


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # "selection", "pixel" or "generator"
    fn: Callable
    summary: str
    config: type | None = None  # the dataclass of its settings, if it has any


_METHODS: dict[str, Method] = {}


def register_method(name: str, kind: str, config: type | None = None):
    """Register ``fn`` under ``name``; its docstring's first line becomes the summary."""

    def decorator(fn: Callable) -> Callable:
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _METHODS[name] = Method(name, kind, fn, summary, config)
        return fn

    return decorator


def list_methods(kind: str | None = None) -> list[str]:
    return sorted(name for name, m in _METHODS.items() if kind is None or m.kind == kind)


def get_method(name: str, kind: str | None = None) -> Method:
    method = _METHODS.get(name)
    if method is None or (kind is not None and method.kind != kind):
        what = f"{kind} method" if kind else "method"
        raise GencondError(f"unknown {what} {name!r}; choose one of {', '.join(list_methods(kind))}")
    return method
