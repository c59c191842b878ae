"""The import-linter contracts of `make check` hold on the real tree and catch a planted
violation (run on a copy of the project, so the tree itself is never touched)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    # lint-imports analyses the `service` package found from its working directory first.
    return subprocess.run(  # noqa: S603  (our own tool on our own tree)
        [str(LINT_IMPORTS), "--no-logo", "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def project_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(
        ROOT / "service", copy / "service", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def plant(copy: Path, module: str, line: str) -> None:
    path = copy / module
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "service/domain/districts.py",
            "import grpc",
            "The domain imports no grpc, aiohttp or asyncpg directly",
        ),
        (
            "service/store/districts.py",
            "import service.api",
            "Adapters import neither the API nor the domain",
        ),
        (
            "service/roster/_retry.py",
            "import service.clever",
            "service.roster imports neither Clever nor ClassLink",
        ),
        (
            "service/domain/roster_sync.py",
            "import service.classlink",
            "The domain reaches Clever and ClassLink only through",
        ),
        (
            "service/domain/students.py",
            "import service.api.handlers",
            "Layers: api above domain above adapters",
        ),
        (
            "service/models.py",
            "import service.store",
            "No import cycles between service's subpackages",
        ),
        (
            "service/domain/attendance.py",
            "import service.domain.worker",
            "Attendance intake depends on the DeliveryQueue interface",
        ),
        (
            "service/domain/rules.py",
            "import service.store",
            "The delivery rules do no I/O",
        ),
    ],
)
def test_a_planted_violation_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    copy = project_copy(tmp_path)
    assert lint_imports(copy).returncode == 0  # the untouched copy is clean
    plant(copy, module, line)
    result = lint_imports(copy)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts", 1)[1]
    assert contract in broken.replace("\n", " ")
