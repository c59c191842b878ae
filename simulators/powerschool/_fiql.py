"""Parser and evaluator for the FIQL-like ``q=`` filter of PowerSchool's schema table API.

Supported, as on a real server: ``==``, ``!=``, ``=gt=``, ``=ge=``, ``=lt=``, ``=le=``, clauses
joined by ``;`` (AND), case-insensitive column names, ``*`` wildcards on varchar columns with
``==``/``!=``. Rejected with a 400 like PowerSchool: ``,`` (OR), unknown columns, CLOB columns,
non-numbers against number columns and non-dates against date columns.
"""

from __future__ import annotations

import datetime
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from ._data import ColType, Column, Row, TableSpec

_CLAUSE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\s*"
                     r"(==|!=|=ge=|=le=|=gt=|=lt=)(.*)$", re.DOTALL)  # fmt: skip
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "=gt=": operator.gt,
    "=ge=": operator.ge,
    "=lt=": operator.lt,
    "=le=": operator.le,
}


class QueryError(Exception):
    """A ``q=``/projection/sort problem; ``message`` is the body's ``message`` (HTTP 400)."""

    def __init__(self, message: str) -> None:
        """Keep ``message`` for the JSON error body."""
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Clause:
    """One ``column op value`` condition, with the value already converted to the column type."""

    column: Column
    op: str
    value: Any
    pattern: re.Pattern[str] | None = None

    def matches(self, row: Row) -> bool:
        """True when ``row`` satisfies this clause (NULL numbers and dates never match)."""
        actual = row.get(self.column.key)
        if self.column.type is ColType.STRING:
            text = "" if actual is None else str(actual)
            if self.pattern is not None:
                found = self.pattern.fullmatch(text) is not None
                return found if self.op == "==" else not found
            return _OPS[self.op](text, self.value)
        if actual is None or actual == "":
            return False
        if self.column.type is ColType.NUMBER:
            try:
                actual = Decimal(str(actual))
            except InvalidOperation:
                return False
        return _OPS[self.op](actual, self.value)


def resolve_column(table: TableSpec, name: str) -> Column | None:
    """Find ``name`` (optionally prefixed ``table.``) in ``table``, case-insensitively."""
    name = name.strip()
    if "." in name:
        prefix, _, name = name.partition(".")
        if prefix.strip().lower() != table.key:
            return None
    return table.column(name)


def parse_date(text: str) -> datetime.date | None:
    """Parse a strict ``YYYY-MM-DD`` date, or return ``None``."""
    if not _DATE.match(text):
        return None
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        return None


def _typed(column: Column, op: str, raw: str) -> Clause:
    if column.type is ColType.CLOB:
        raise QueryError("Querying not supported against clob or blob field types")
    if column.type is ColType.NUMBER:
        try:
            number = Decimal(raw.strip())
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite():
            raise QueryError(
                f"Invalid number '{raw}' passed for comparison to number field {column.canonical}"
            )
        return Clause(column, op, number)
    if column.type is ColType.DATE:
        day = parse_date(raw.strip())
        if day is None:
            raise QueryError(
                f"Invalid date '{raw}' passed for comparison to date field {column.canonical}"
            )
        return Clause(column, op, day)
    if "*" in raw and op in ("==", "!="):
        regex = ".*".join(re.escape(part) for part in raw.split("*"))
        return Clause(column, op, raw, re.compile(regex, re.DOTALL))
    return Clause(column, op, raw)


def parse(q: str | None, table: TableSpec) -> list[Clause]:
    """Parse a ``q=`` expression for ``table``; raise ``QueryError`` where PowerSchool says 400."""
    if q is None or not q.strip():
        return []
    if "," in q:
        raise QueryError("Invalid query: OR (',') is not supported; join conditions with ';'")
    clauses: list[Clause] = []
    for part in q.split(";"):
        if not part.strip():
            continue
        m = _CLAUSE.match(part)
        if m is None:
            raise QueryError(f"Invalid query expression: {part}")
        name, op, raw = m.group(1), m.group(2), m.group(3)
        column = resolve_column(table, name)
        if column is None:
            raise QueryError(f"Invalid field {name}")
        clauses.append(_typed(column, op, raw))
    return clauses


def matches(row: Row, clauses: Sequence[Clause]) -> bool:
    """True when ``row`` satisfies every clause (AND)."""
    return all(c.matches(row) for c in clauses)
