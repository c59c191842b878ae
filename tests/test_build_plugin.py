"""``make plugin``: scripts/build_plugin.py builds the zip a PowerSchool admin installs."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from service.powerschool import plugin_path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "scripts" / "build_plugin.py"
NS = "{http://plugin.powerschool.pearson.com}"


def test_the_zip_holds_the_shipped_plugin_xml_at_its_root(tmp_path: Path) -> None:
    done = subprocess.run(  # noqa: S603 - our own script, our own arguments
        [sys.executable, str(BUILD), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    built = Path(done.stdout.strip())
    assert built.parent == tmp_path
    assert built.name.startswith("writeback-powerschool-plugin-")
    with zipfile.ZipFile(built) as archive:
        assert archive.namelist() == ["plugin.xml"]  # at the root, no top-level folder
        content = archive.read("plugin.xml")
    assert content == plugin_path().read_bytes()
    assert b"<oauth" in content
    root = ET.fromstring(content)  # noqa: S314 - our own file
    assert root.tag == f"{NS}plugin"
    assert root.find(f"{NS}publisher/{NS}contact").get("email")  # type: ignore[union-attr]
    requested = root.findall(f"{NS}access_request/{NS}field")
    assert requested
    assert {f.get("access") for f in requested} == {"ViewOnly", "FullAccess"}
    full = {f.get("table", "").upper() for f in requested if f.get("access") == "FullAccess"}
    assert full == {"ATTENDANCE"}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda t: t.replace("<oauth/>", ""), "no <oauth/>"),
        (
            lambda t: t.replace(
                'table="STUDENTS" field="DCID" access="ViewOnly"',
                'table="STUDENTS" field="DCID" access="FullAccess"',
            ),
            "FullAccess outside ATTENDANCE: STUDENTS.DCID",
        ),
        (lambda t: t.replace("</plugin>", ""), "not well-formed"),
    ],
)
def test_the_build_refuses_an_unfit_plugin_xml(
    tmp_path: Path, change: Callable[[str], str], reason: str
) -> None:
    source = tmp_path / "plugin.xml"
    source.write_text(change(plugin_path().read_text()))
    done = subprocess.run(  # noqa: S603 - our own script, our own arguments
        [sys.executable, str(BUILD), "--out", str(tmp_path / "d"), "--source", str(source)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert reason in done.stderr
    assert not (tmp_path / "d").exists()
