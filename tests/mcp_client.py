"""An MCP client built on the `mcp` SDK from PyPI, driving grym's MCP tools.

    python mcp_client.py stdio GRYM ADDR WAV     # spawns `GRYM --addr ADDR mcp`
    python mcp_client.py http URL WAV [TOKEN]    # grymd's Streamable HTTP

Lists the tools, runs the WAV through `execute_task` (by `audio_path` over
stdio, as base64 over HTTP), asks `get_task` for the same task, calls
`list_models`, and prints what came back as one JSON document.
"""

import asyncio
import base64
import json
import sys
from typing import Any

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def exercise(session: ClientSession, arguments: dict[str, Any]) -> dict[str, Any]:
    await session.initialize()
    tools = await session.list_tools()
    execute = await session.call_tool("execute_task", arguments)
    report: dict[str, Any] = {
        "tools": sorted(tool.name for tool in tools.tools),
        "schemas": {tool.name: tool.input_schema for tool in tools.tools},
        "execute": {
            "is_error": execute.is_error,
            "structured": execute.structured_content,
            "text": [c.text for c in execute.content if getattr(c, "text", None)],
        },
    }
    if not execute.is_error:
        task_id = execute.structured_content["result"]["task_id"]
        got = await session.call_tool("get_task", {"task_id": task_id})
        report["get"] = {"is_error": got.is_error, "structured": got.structured_content}
    models = await session.call_tool("list_models", {})
    report["models"] = {
        "is_error": models.is_error,
        "structured": models.structured_content,
        "text": [c.text for c in models.content if getattr(c, "text", None)],
    }
    return report


async def main(argv: list[str]) -> None:
    mode = argv[1]
    if mode == "stdio":
        grym, addr, wav = argv[2:5]
        arguments = {"task": {"type": "audio_analysis"}, "audio_path": wav}
        server = StdioServerParameters(command=grym, args=["--addr", addr, "mcp"])
        async with stdio_client(server) as (read, write):
            async with ClientSession(read, write) as session:
                report = await exercise(session, arguments)
    else:
        url, wav = argv[2:4]
        headers = {"Authorization": f"Bearer {argv[4]}"} if len(argv) > 4 else None
        with open(wav, "rb") as f:
            data = base64.b64encode(f.read()).decode()
        arguments = {"task": {"type": "audio_analysis", "input": {"audio": {"data": data}}}}
        async with create_mcp_http_client(headers=headers) as client:
            async with streamable_http_client(url, http_client=client) as (read, write):
                async with ClientSession(read, write) as session:
                    report = await exercise(session, arguments)
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main(sys.argv))
