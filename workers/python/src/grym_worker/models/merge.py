"""`merge`: joins the outputs of the steps a composite step waits for (its
context's `steps`) into one analysis, the last step of the `audio_analysis`
fan-out recipe: voice activity, audio features and notes, side by side,
with a summary an agent can read."""

from __future__ import annotations

from typing import Any

from ..model import Capability, InvalidInput, Model, Output, Request


class AnalysisMerge(Model):
    """One analysis from several: `json` holds each step's JSON output
    under its step id, and `text` their summaries, one a line."""

    model_id = "merge"
    kind = "analysis-merge"
    # It reads the steps' outputs from its context, never its input (in the
    # fan-out recipe, the task's audio): it takes any.
    capabilities = (Capability("analysis_merge", confidence=0.9, estimated_latency=0.002),)
    max_concurrency = 8

    def load(self) -> None:
        pass

    def infer(self, request: Request) -> Output:
        steps = request.context.get("steps")
        if not isinstance(steps, dict) or not steps:
            raise InvalidInput(
                "invalid context.steps: the merge step takes the outputs of the steps it waits for"
            )
        merged: dict[str, Any] = {}
        lines = []
        for step_id in sorted(steps):
            part = steps[step_id]
            if not isinstance(part, dict):
                continue
            merged[step_id] = {
                "model_id": part.get("model_id", ""),
                "output": part.get("json"),
            }
            summary = part.get("text")
            if summary:
                lines.append(f"{step_id} ({part.get('model_id', '?')}): {summary}")
        return Output(text="\n".join(lines), json=merged)
