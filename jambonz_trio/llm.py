"""Helpers for LLM voice agents: the vendor-specific ``llm:tool-output`` payloads of 0.9.8.

feature-server 0.9.8 hands the ``llm:tool-output`` data to the vendor's realtime API nearly
verbatim, so its shape depends on the ``llm`` verb's vendor (``docs/protocol.md`` §9.5; the
v10 ``{"result": ...}`` form is not understood by 0.9.8). :func:`tool_output` builds the right one::

    await call.llm_tool_output(tc.tool_call_id, tool_output("openai", tc, {"temp_c": 21}))
"""

from __future__ import annotations

import json
from typing import Any

from ._protocol._calldata import ToolCall
from ._public import fixup_module_metadata

__all__ = ["VENDORS", "tool_output"]

#: Vendors whose tool-output shape is known (``microsoft`` shares OpenAI's, ``voiceagent``
#: Deepgram's).
VENDORS = frozenset({"openai", "microsoft", "ultravox", "elevenlabs", "deepgram", "voiceagent", "google"})


def _text(result: Any) -> str:
    return result if isinstance(result, str) else json.dumps(result)


def tool_output(vendor: str, tool_call: ToolCall, result: Any, *, is_error: bool = False) -> dict[str, Any]:
    """The ``llm:tool-output`` ``data`` answering ``tool_call`` for ``vendor``.

    ``result`` is sent as text (JSON-encoded if it is not a string) where the vendor wants text.

    Raises:
        ValueError: an unknown vendor, or a tool call without an id.
    """
    tcid = tool_call.tool_call_id
    if tcid is None:
        raise ValueError("the tool call has no tool_call_id")
    if vendor in ("openai", "microsoft"):
        return {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": tcid, "output": _text(result)},
        }
    if vendor == "ultravox":
        return {"type": "client_tool_result", "invocation_id": tcid, "result": _text(result)}
    if vendor == "elevenlabs":
        return {
            "data": {
                "type": "client_tool_result",
                "tool_call_id": tcid,
                "result": result,
                "is_error": is_error,
            }
        }
    if vendor in ("deepgram", "voiceagent"):
        return {
            "data": {
                "type": "FunctionCallResponse",
                "id": tcid,
                "name": tool_call.name or "",
                "content": _text(result),
            }
        }
    if vendor == "google":
        return {"toolResponse": {"functionResponses": [{"id": tcid, "response": {"output": result}}]}}
    raise ValueError(f"unknown llm vendor {vendor!r}; build the payload yourself (one of {sorted(VENDORS)})")


fixup_module_metadata(__name__, globals())
