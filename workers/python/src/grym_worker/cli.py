"""`grym-py-worker MODEL --listen HOST:PORT`: serves a bundled model (or
`module:Class`), printing `listening on HOST:PORT` once bound."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys

from .model import Model
from .models import BUNDLED
from .server import DEFAULT_SHUTDOWN_GRACE, Worker
from .telemetry import Telemetry, TelemetryError


def build_model(name: str, checkpoint: str | None, model_path: str | None) -> Model:
    """A bundled model by name, or the `Model` subclass `module:Class`."""
    options = {k: v for k, v in (("checkpoint", checkpoint), ("model_path", model_path)) if v}
    if name in BUNDLED:
        return BUNDLED[name](**options)
    module, _, attribute = name.partition(":")
    if not attribute:
        raise SystemExit(f"unknown model `{name}`: one of {', '.join(BUNDLED)}, or module:Class")
    cls = getattr(importlib.import_module(module), attribute)
    return cls(**options) if options else cls()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="grym-py-worker", description=__doc__)
    parser.add_argument("model", help=f"{', '.join(BUNDLED)}, or module:Class")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0 picks a free one)")
    parser.add_argument("--checkpoint", help="the local checkpoint folder (gama, wav2vec2)")
    parser.add_argument("--model-path", help="an ONNX file instead of the packaged one (vad, pitch)")
    parser.add_argument("--max-queue", type=int, help="calls that may wait for a turn (default 4 per running call)")
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=float(os.environ.get("GRYM_SHUTDOWN_GRACE_SECONDS", DEFAULT_SHUTDOWN_GRACE)),
        help="seconds running calls get after SIGTERM",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("GRYM_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        telemetry = Telemetry.from_env()
    except TelemetryError as error:
        raise SystemExit(str(error)) from None
    telemetry.install()
    model = build_model(args.model, args.checkpoint, args.model_path)
    worker = Worker(
        model, max_queue=args.max_queue, shutdown_grace=args.shutdown_grace, interceptors=telemetry.interceptors
    )
    host = args.listen.rsplit(":", 1)[0]

    def listening(port: int) -> None:
        print(f"listening on {host}:{port}", flush=True)

    try:
        asyncio.run(worker.serve(args.listen, listening))
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
