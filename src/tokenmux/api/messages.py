"""The shape of a chat request's `messages`: roles, content parts, names and tool calls.

A message of a role and a string content (nearly all of them) costs two type tests; the rest of
a message is looked at only when it has more fields. Paths in errors are the message's own,
`messages[3].content[1].image_url.url`.
"""

from __future__ import annotations

from typing import Any

from tokenmux.api.schema import MAX_DEPTH, ROLES, check_depth, fail, kind_of, shown

_PART_TYPES = {
    "system": frozenset({"text"}),
    "developer": frozenset({"text"}),
    "user": frozenset({"text", "image_url", "input_audio", "file"}),
    "assistant": frozenset({"text", "refusal"}),
    "tool": frozenset({"text"}),
    "function": frozenset({"text"}),
}
# The string fields of each object part: (required, optional).
_PART_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "image_url": (("url",), ("detail",)),
    "input_audio": (("data", "format"), ()),
    "file": ((), ("file_data", "file_id", "filename")),
}
_ROLE_NAMES = "'system', 'developer', 'user', 'assistant', 'tool' or 'function'"


def check_messages(messages: Any) -> None:
    if messages is None:
        fail("messages", "is required.")
    if not isinstance(messages, list):
        fail("messages", "must be an array of message objects.")
    if not messages:
        fail("messages", "must contain at least one message.")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            fail(f"messages[{i}]", f"must be an object; got {kind_of(message)}.")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            fail(f"messages[{i}].role", f"must be one of {_ROLE_NAMES}; got {shown(role)}.")
        if not isinstance(message.get("content"), str):
            _check_content(message, role, i)
        elif len(message) == 2 and role not in ("tool", "function"):
            continue  # a role and a text: nothing more to look at
        _check_fields(message, role, i)
        check_depth(message, MAX_DEPTH - 2)  # under the body and the messages array


def _check_content(message: dict[str, Any], role: str, i: int) -> None:
    content = message.get("content")
    if content is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return
        fail(f"messages[{i}].content", f"is required in a message of role '{role}'.")
    if not isinstance(content, list):
        fail(f"messages[{i}].content", "must be a string or an array of content parts.")
    allowed = _PART_TYPES[role]
    for j, part in enumerate(content):
        at = f"messages[{i}].content[{j}]"
        if not isinstance(part, dict):
            fail(at, f"must be an object; got {kind_of(part)}.")
        kind = part.get("type")
        if not isinstance(kind, str) or kind not in allowed:
            fail(f"{at}.type", f"must be one of {', '.join(sorted(allowed))} in a message of "
                 f"role '{role}'; got {shown(kind)}.")
        _check_part(part, kind, at)


def _check_part(part: dict[str, Any], kind: str, at: str) -> None:
    value = part.get(kind)
    if kind in ("text", "refusal"):
        if not isinstance(value, str):
            fail(f"{at}.{kind}", "is required and must be a string.")
        return
    if not isinstance(value, dict):
        fail(f"{at}.{kind}", "is required and must be an object.")
    required, optional = _PART_FIELDS[kind]
    for name in required:
        if not isinstance(value.get(name), str):
            fail(f"{at}.{kind}.{name}", "is required and must be a string.")
    for name in optional:
        if value.get(name) is not None and not isinstance(value[name], str):
            fail(f"{at}.{kind}.{name}", f"must be a string; got {kind_of(value[name])}.")


def _check_fields(message: dict[str, Any], role: str, i: int) -> None:
    """The fields besides role and content: name, tool_call_id, tool_calls, function_call,
    refusal and audio."""
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        fail(f"messages[{i}].name", f"must be a string; got {kind_of(name)}.")
    if role == "function" and not isinstance(name, str):
        fail(f"messages[{i}].name", "is required for a function message.")
    call_id = message.get("tool_call_id")
    if role == "tool" and not isinstance(call_id, str):
        fail(f"messages[{i}].tool_call_id", "is required for a tool message and must be a "
             "string.")
    if call_id is not None and not isinstance(call_id, str):
        fail(f"messages[{i}].tool_call_id", f"must be a string; got {kind_of(call_id)}.")
    refusal = message.get("refusal")
    if refusal is not None and not isinstance(refusal, str):
        fail(f"messages[{i}].refusal", f"must be a string; got {kind_of(refusal)}.")
    audio = message.get("audio")
    if audio is not None and (not isinstance(audio, dict) or not isinstance(audio.get("id"), str)):
        fail(f"messages[{i}].audio", "must be {id: a string}.")
    if (calls := message.get("tool_calls")) is not None:
        _check_tool_calls(calls, f"messages[{i}].tool_calls")
    if (call := message.get("function_call")) is not None:
        _check_call(call, "name", "arguments", f"messages[{i}].function_call")


def _check_tool_calls(calls: Any, at: str) -> None:
    if not isinstance(calls, list):
        fail(at, f"must be an array of tool calls; got {kind_of(calls)}.")
    for j, call in enumerate(calls):
        where = f"{at}[{j}]"
        if not isinstance(call, dict):
            fail(where, f"must be an object; got {kind_of(call)}.")
        if not isinstance(call.get("id"), str):
            fail(f"{where}.id", "is required and must be a string.")
        kind = call.get("type")
        if kind == "function":
            _check_call(call.get("function"), "name", "arguments", f"{where}.function")
        elif kind == "custom":
            _check_call(call.get("custom"), "name", "input", f"{where}.custom")
        else:
            fail(f"{where}.type", f"must be 'function' or 'custom'; got {shown(kind)}.")


def _check_call(call: Any, name: str, arguments: str, at: str) -> None:
    if not isinstance(call, dict):
        fail(at, f"must be an object with '{name}' and '{arguments}'; got {kind_of(call)}.")
    if not isinstance(call.get(name), str) or not call[name]:
        fail(f"{at}.{name}", "is required and must be a non-empty string.")
    if not isinstance(call.get(arguments), str):
        fail(f"{at}.{arguments}", f"is required and must be a string; got "
             f"{kind_of(call.get(arguments))}.")
