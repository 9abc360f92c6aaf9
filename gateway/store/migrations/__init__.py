"""Versioned schema migrations, one module each (``mNNNN_name.py`` with VERSION, DESCRIPTION
and SQL), applied in order at start-up and by ``gateway migrate``.

Add a module for a change; never edit one that has shipped. Statements are split on ``;``,
so SQL here must not put a semicolon inside a string literal.
"""

from __future__ import annotations

import importlib
import pkgutil


def _load() -> tuple[tuple[int, str, str], ...]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("m"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            found.append((int(module.VERSION), str(module.DESCRIPTION), str(module.SQL)))
    found.sort()
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"migration versions must be 1..n without gaps, found {versions}")
    return tuple(found)


MIGRATIONS = _load()
LATEST = MIGRATIONS[-1][0]
