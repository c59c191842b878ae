"""Loads the named SQL queries kept next to the store code (``queries/*.sql``).

A query starts at a ``-- name: <name>`` line and runs to the next one.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_QUERY_DIR = Path(__file__).parent / "queries"
_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


@cache
def load(group: str) -> dict[str, str]:
    """All queries of ``queries/<group>.sql`` by name."""
    text = (_QUERY_DIR / f"{group}.sql").read_text()
    parts = _NAME.split(text)
    return {name: sql.strip() for name, sql in zip(parts[1::2], parts[2::2], strict=True)}
