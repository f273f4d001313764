"""grym worker SDK for Python: serve a model to grym orchestrator, and call
grymd from a Python agent.

    from grym_worker import Capability, Model, Output, Worker

    class Echo(Model):
        model_id = "echo"
        kind = "text-generation"
        capabilities = (Capability("text_generation", confidence=0.5, estimated_latency=0.01),)

        def infer(self, request):
            return Output(text=request.text())
"""

from .client import GrymClient, output_json, task
from .model import (
    Audio,
    Capability,
    Chunk,
    FailedPrecondition,
    InvalidInput,
    Model,
    ModelError,
    Output,
    Request,
    Unavailable,
)
from .server import Worker

__all__ = [
    "Audio",
    "Capability",
    "Chunk",
    "FailedPrecondition",
    "GrymClient",
    "InvalidInput",
    "Model",
    "ModelError",
    "Output",
    "Request",
    "Unavailable",
    "Worker",
    "output_json",
    "task",
]
