"""Fail if the checked-in generated code is stale (someone edited a .proto without `make proto`)."""

from __future__ import annotations

import filecmp
import tempfile
from pathlib import Path

from gen_proto import PROTO_ROOT, generate  # scripts/ is on sys.path when run as a script


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = [
            str(fresh.relative_to(tmp))
            for fresh in Path(tmp).rglob("*_pb2*")
            if not filecmp.cmp(fresh, PROTO_ROOT / fresh.relative_to(tmp), shallow=False)
        ]
    if stale:
        print("generated code is stale, run `make proto`:", *stale, sep="\n  ")
        return 1
    print("generated code is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
