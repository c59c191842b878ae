"""Input files of the CLI: a district file (YAML or JSON) and a students CSV.

Secrets are never written in a district file: each is named there by an environment
variable (``client_secret_env: PS_SECRET``) or a file (``client_secret_file: /run/secrets/ps``).
Error messages name lines, columns and fields, never a value that could be a secret or a
student's name.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from writeback.v1 import writeback_pb2 as pb


class InputError(ValueError):
    """An input file the caller must fix; the message says where and what."""


# (section, field) of every write-only secret in a District.
SECRETS = (
    ("powerschool", "client_secret"),
    ("clever", "client_secret"),
    ("clever", "district_token"),
    ("classlink", "client_secret"),
)


def read_district(path: Path, environ: Mapping[str, str] = os.environ) -> pb.District:
    """The District a YAML file (JSON when it ends in ``.json``) describes, in the proto's
    JSON shape, with each secret read from the environment variable or file it names."""
    data = _load(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: must be a mapping of District fields (district_id, ...)")
    for section, name in SECRETS:
        part = data.get(section)
        if isinstance(part, dict):
            _resolve_secret(path, part, section, name, environ)
    try:
        return json_format.ParseDict(data, pb.District())
    except json_format.ParseError as err:
        raise InputError(f"{path}: {err}") from None


def _load(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot be read ({type(err).__name__})") from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: not valid JSON: {err}") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        # Only the problem and its place: PyYAML's own message quotes the offending line.
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise InputError(f"{path}: not valid YAML: {where}{err.problem}") from None
    except yaml.YAMLError:
        raise InputError(f"{path}: not valid YAML") from None


def _resolve_secret(
    path: Path, part: dict[str, Any], section: str, name: str, environ: Mapping[str, str]
) -> None:
    where = f"{path}: {section}.{name}"
    if name in part:
        raise InputError(
            f"{where}: a secret is never written in the file; name an environment variable "
            f"({name}_env: VARIABLE) or a file holding it ({name}_file: /run/secrets/...)"
        )
    variable = part.pop(f"{name}_env", None)
    secret_file = part.pop(f"{name}_file", None)
    if variable is not None and secret_file is not None:
        raise InputError(f"{where}: give {name}_env or {name}_file, not both")
    if variable is not None:
        if not isinstance(variable, str) or not variable:
            raise InputError(f"{where}_env: must be an environment variable's name")
        secret = environ.get(variable, "")
        if not secret:
            raise InputError(f"{where}_env: the environment variable {variable} is not set")
        part[name] = secret
    elif secret_file is not None:
        if not isinstance(secret_file, str) or not secret_file:
            raise InputError(f"{where}_file: must be a file's path")
        file = path.parent / secret_file  # relative to the district file; absolute stays
        try:
            secret = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            reason = type(err).__name__
            raise InputError(f"{where}_file: {file} cannot be read ({reason})") from None
        if not secret:
            raise InputError(f"{where}_file: {file} is empty")
        part[name] = secret


# The CSV's columns, in the order of RosterStudent's fields; only roster_id is required.
COLUMNS = (
    "roster_id",
    "sis_id",
    "student_number",
    "first_name",
    "last_name",
    "roster_school_id",
    "grade",
    "active",
)
_TRUE = {"", "true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n"}


@dataclass(frozen=True)
class StudentRow:
    """One student of a students CSV, and the line it starts on."""

    line: int
    student: pb.RosterStudent


def read_students(path: Path) -> list[StudentRow]:
    """Every student of a CSV with a header row naming some of :data:`COLUMNS` (roster_id
    required; ``active`` empty or missing means true). The whole file is checked before any
    student is sent, so a bad file imports nothing."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return _rows(path, csv.reader(handle))
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot be read ({type(err).__name__})") from None
    except csv.Error as err:
        raise InputError(f"{path}: not a valid CSV: {err}") from None


def _rows(path: Path, reader: Any) -> list[StudentRow]:
    header = [name.strip() for name in next(reader, [])]
    if "roster_id" not in header:
        raise InputError(
            f"{path}: the first line must name the columns, roster_id among them "
            f"(known: {', '.join(COLUMNS)})"
        )
    unknown = sorted(set(header) - set(COLUMNS))
    if unknown or len(set(header)) != len(header):
        raise InputError(
            f"{path}: line 1: columns must be distinct, from: {', '.join(COLUMNS)}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    rows: list[StudentRow] = []
    first_line: dict[str, int] = {}
    start = reader.line_num + 1
    for values in reader:
        line = start
        start = reader.line_num + 1
        if not values:
            continue
        if len(values) != len(header):
            raise InputError(
                f"{path}: line {line}: {len(values)} fields where the header has {len(header)}"
            )
        fields = dict(zip(header, values, strict=True))
        active = fields.pop("active", "").strip().lower()
        if active not in _TRUE | _FALSE:
            raise InputError(f"{path}: line {line}: active must be true or false")
        student = pb.RosterStudent(**fields, active=active in _TRUE)
        if student.roster_id in first_line:
            raise InputError(
                f"{path}: line {line}: roster_id repeats line {first_line[student.roster_id]}"
            )
        first_line[student.roster_id] = line
        rows.append(StudentRow(line, student))
    if not rows:
        raise InputError(f"{path}: no students after the header line")
    return rows
