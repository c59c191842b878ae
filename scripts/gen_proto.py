"""Generate Python code and typed stubs for proto/writeback/v1/*.proto in place."""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"


def generate(out_dir: Path) -> None:
    """Run protoc with mypy-protobuf's plugins, writing into ``out_dir``."""
    include = Path(protoc.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    plugin_dir = Path(sys.executable).parent
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> None:
    generate(PROTO_ROOT)
    for pb2 in PROTO_ROOT.rglob("*_pb2.py"):
        # Every directory between proto/ and the generated module must be a package.
        for pkg in [pb2.parent, *pb2.parent.relative_to(PROTO_ROOT).parents][:-1]:
            (PROTO_ROOT / pkg / "__init__.py").touch()
    print("generated", ", ".join(sorted(p.name for p in PROTO_ROOT.rglob("*_pb2*.py*"))))


if __name__ == "__main__":
    main()
