"""Generates the Python stubs of `proto/` into `src/grym_worker/proto/`.

Run it after changing a `.proto` file (with the `dev` extra installed, whose
grpcio-tools is pinned so the output is the same on every machine):

    python workers/python/generate_protos.py

`tests/test_protos.py` fails when the checked-in stubs differ from what this
script makes of `proto/`.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
PACKAGE = "grym_worker.proto"
TARGET = HERE / "src" / "grym_worker" / "proto"
FILES = ["grym/worker/v1/worker.proto", "grym/orchestrator/v1/orchestrator.proto"]


def generate(out: Path) -> None:
    """Writes the stubs under `out`, imports rewritten to live in `PACKAGE`."""
    from grpc_tools import protoc  # the `dev` extra

    out.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *FILES,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in sorted(out.rglob("*.py*")):
        text = path.read_text()
        text = re.sub(r"^from grym\.", f"from {PACKAGE}.grym.", text, flags=re.M)
        text = re.sub(r"^import grym\.", f"import {PACKAGE}.grym.", text, flags=re.M)
        path.write_text(text)
    for folder in [out, *sorted(p for p in out.rglob("*") if p.is_dir())]:
        init = folder / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated from proto/ by generate_protos.py: do not edit."""\n')


def snapshot(root: Path) -> dict[str, str]:
    """Every generated file under `root`, by relative path."""
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch)
        generate(fresh)
        for old in TARGET.rglob("*"):
            if old.is_file() and "__pycache__" not in old.parts:
                old.unlink()
        for name, text in snapshot(fresh).items():
            path = TARGET / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    print(f"wrote {TARGET}", file=sys.stderr)


if __name__ == "__main__":
    main()
