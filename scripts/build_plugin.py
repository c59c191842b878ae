"""Build the installable PowerSchool plugin zip (``make plugin``).

PowerSchool installs a zip with ``plugin.xml`` at its root (no top-level folder). The zip holds
the plugin.xml the service ships (``service/powerschool/plugin/plugin.xml``, or ``--source``),
byte for byte, after checking it parses, enables OAuth and asks FullAccess on nothing but
ATTENDANCE. Prints the zip's path.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

from service.powerschool import Access, PluginError, load_plugin, plugin_path

# A fixed timestamp keeps the zip byte-identical between builds of the same plugin.xml.
_EPOCH = (1980, 1, 1, 0, 0, 0)


def build(out_dir: Path, source: Path) -> Path:
    """Zip ``source`` as ``writeback-powerschool-plugin-<version>.zip`` into ``out_dir``;
    return its path."""
    grants = load_plugin(source)
    if not grants.oauth:
        raise PluginError("plugin.xml has no <oauth/>: PowerSchool would issue no credentials")
    for table in grants.tables:
        full = sorted(f for f, a in grants.fields(table).items() if a is Access.FULL_ACCESS)
        if full and table != "ATTENDANCE":
            raise PluginError(f"FullAccess outside ATTENDANCE: {table}.{', '.join(full)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"writeback-powerschool-plugin-{grants.version}.zip"
    info = zipfile.ZipInfo("plugin.xml", date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr(info, source.read_bytes())
    return target


def main(argv: list[str] | None = None) -> int:
    """Build into ``--out`` (default ``dist``); exit 1 with the reason if plugin.xml is unfit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("dist"), help="output directory")
    parser.add_argument(
        "--source", type=Path, default=plugin_path(), help="plugin.xml (default: the shipped one)"
    )
    args = parser.parse_args(argv)
    try:
        print(build(args.out, args.source))
    except PluginError as exc:
        print(f"build_plugin: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
