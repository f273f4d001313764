"""Finding model files that PyPI packages ship, without importing those
packages (their `__init__` imports torch or TensorFlow, which are not
installed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..model import FailedPrecondition


def package_file(package: str, relative: str, distribution: str) -> Path:
    """`relative` inside the installed `package`, or a clear error naming
    the distribution to install."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FailedPrecondition(
            f"the `{distribution}` package is not installed: pip install --no-deps {distribution}"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / relative
        if path.is_file():
            return path
    raise FailedPrecondition(f"`{distribution}` is installed but has no {relative}")


def onnx_session(path: Path, threads: int = 1):  # -> onnxruntime.InferenceSession
    """A CPU session of the ONNX model at `path`, `threads` per call."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
