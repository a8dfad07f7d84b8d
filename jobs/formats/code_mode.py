"""Code Mode: one native tool, execute_code, whose `code` argument is Python that
calls the runtime's tools. Written in the Qwen3 XML grammar
(`<tool_call><function=execute_code><parameter=code>…`), or as a JSON call.

A suite format, like `json_tools`: FORMAT (the suite's `format:`) and
`render_call`, the call that scores 1.0 as the chat template writes it.
"""

from __future__ import annotations

from collections.abc import Mapping

from jobs.formats import qwen3_xml
from jobs.formats.json_tools import json_prefix

FORMAT = "code_mode"
# The one native tool of Code Mode; every runtime tool is called from its code.
WRAPPER = "execute_code"


def render_call(name: str, arguments: Mapping[str, object]) -> str:
    """A call as Code Mode writes it: in the Qwen3 XML grammar."""
    return qwen3_xml.render_call(name, arguments)


def render_code(code: str) -> str:
    """The Code-Mode call of `code` exactly as the chat template writes it."""
    return render_call(WRAPPER, {"code": code})


def code_argument(arguments: object) -> str | None:
    """The `code` argument of an execute_code call, in any of the shapes models write."""
    if isinstance(arguments, str):  # OpenAI style: arguments as a JSON string
        arguments = json_prefix(arguments.strip())
    if isinstance(arguments, dict) and isinstance(arguments.get("code"), str):
        return arguments["code"]
    return None
