"""Fail if the checked-in generated code is stale (someone edited a .proto without `make proto`)."""

from __future__ import annotations

import filecmp
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--to", tmp],
            check=True,
            capture_output=True,
        )
        stale = [
            str(fresh.relative_to(tmp))
            for fresh in Path(tmp).rglob("*_pb2*")
            if not filecmp.cmp(fresh, ROOT / "proto" / fresh.relative_to(tmp), shallow=False)
        ]
    if stale:
        print("generated code is stale, run `make proto`:", *stale, sep="\n  ")
        return 1
    print("generated code is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
