"""The checked-in stubs are what `generate_protos.py` makes of `proto/`."""

import importlib.util
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def load_generator():
    spec = importlib.util.spec_from_file_location("generate_protos", HERE / "generate_protos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["generate_protos"] = module
    spec.loader.exec_module(module)
    return module


def test_checked_in_stubs_match_the_protos():
    generator = load_generator()
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch)
        generator.generate(fresh)
        expected = generator.snapshot(fresh)
    actual = generator.snapshot(generator.TARGET)
    stale = sorted(name for name in expected.keys() | actual.keys() if expected.get(name) != actual.get(name))
    assert not stale, f"stubs out of date with proto/ ({stale}): run python workers/python/generate_protos.py"
