"""Versioned schema migrations, one module each (``mNNNN_name.py`` with VERSION, DESCRIPTION
and SQL), applied in order at start-up and by ``gateway migrate``.

Add a module for a change; never edit one that has shipped. ``statements`` splits a module's
SQL into statements (a trigger's body, with its own semicolons, stays one statement).
"""

from __future__ import annotations

import importlib
import pkgutil
import sqlite3
from collections.abc import Iterator


def statements(sql: str) -> Iterator[str]:
    """The complete SQL statements of ``sql``, in order."""
    pending = ""
    for piece in sql.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending.strip()
            pending = ""
    if pending.strip(" \n;"):
        raise ValueError(f"incomplete SQL statement at the end: {pending.strip()!r}")


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
