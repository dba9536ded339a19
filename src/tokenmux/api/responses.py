"""The OpenAI Responses door (`POST /v1/responses`): its request into the one internal request.

    input (string | items) + instructions + previous conversation  →  chat `messages`
    tools (function) / tool_choice / text.format / max_output_tokens / reasoning.effort
                                                                    →  their chat fields

The body is read once; what the answer needs to echo (instructions, tools, text, store, …) is
kept on the `ResponsesRequest`, and the translated chat body goes through `parse_chat`, so the
door obeys every rule the chat door does. Hosted tools (web search, file search, code
interpreter, …) and the fields of OpenAI's own state (background, conversation, prompt
templates) are refused with a 400 naming the field: no channel behind the gateway runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from tokenmux.api.chat import ChatRequest, json_object, parse_chat
from tokenmux.api.schema import MAX_DEPTH, check_depth, fail, kind_of, shown
from tokenmux.errors import InvalidRequest

# Fields translated here, or only echoed in the answer.
_OWN = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "text", "max_output_tokens",
    "reasoning", "stream", "store", "previous_response_id", "metadata", "truncation",
    "include", "stream_options", "parallel_tool_calls", "temperature", "top_p", "user",
    "safety_identifier", "prompt_cache_key", "service_tier",
})
# Sent on as they are: the chat request has the same field.
_SAME = ("parallel_tool_calls", "temperature", "top_p", "user", "safety_identifier",
         "prompt_cache_key", "service_tier")
# The gateway's own extensions, as the chat door takes them.
_GATEWAY = frozenset({"models", "fallback_models", "fallback_timeout", "fallback_enabled",
                      "compression"})
# OpenAI's server-side features, which no channel behind the gateway has.
_REFUSED = {
    "background": "background responses",
    "conversation": "conversations kept by OpenAI",
    "prompt": "prompt templates kept by OpenAI",
    "top_logprobs": "log probabilities",
    "max_tool_calls": "a cap on hosted tool calls",
    "context_management": "server-side context management",
}
FUNCTION_TOOL = "function"
_TOOL_CHOICES = ("none", "auto", "required")
_IMAGE_DETAILS = ("auto", "low", "high")


@dataclass(slots=True)
class Previous:
    """A completed response a request continues (`previous_response_id`)."""

    id: str
    messages: list[dict[str, Any]]  # its conversation as chat messages, its answer last


@dataclass(slots=True)
class ResponsesRequest:
    """What the answer echoes of the request, and the conversation it is kept with."""

    body: dict[str, Any]
    previous: Previous | None = None
    # The conversation in chat form, instructions left out (they are not carried over to a
    # response that continues this one, as OpenAI does).
    conversation: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stored(self) -> bool:
        return self.body.get("store") is not False

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True


def read_request(raw: bytes) -> ResponsesRequest:
    body = json_object(raw)
    for name in body:
        if name in _REFUSED and body[name] not in (None, False):
            raise InvalidRequest(f"'{name}' is not supported: the gateway has no "
                                 f"{_REFUSED[name]}.", param=name)
        if name not in _OWN and name not in _GATEWAY and name not in _REFUSED:
            raise InvalidRequest(f"Unknown parameter: '{name}'.", param=name,
                                 code="unknown_parameter")
    check_depth(body, MAX_DEPTH)
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        fail("previous_response_id", "must be a response id.")
    for name in ("stream", "store"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            fail(name, f"must be a boolean; got {shown(body[name])}.")
    # Echoed in the answer, so held to the answer's types.
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or not all(
            isinstance(v, str) for v in metadata.values())):
        fail("metadata", "must be an object of strings.")
    if body.get("truncation") not in (None, "auto", "disabled"):
        fail("truncation", f"must be 'auto' or 'disabled'; got {shown(body['truncation'])}.")
    return ResponsesRequest(body)


def chat_request(request: ResponsesRequest) -> ChatRequest:
    """The Responses request as the one internal (chat) request."""
    body = request.body
    conversation = [] if request.previous is None else list(request.previous.messages)
    conversation += _input_messages(body.get("input"))
    request.conversation = conversation
    messages = conversation
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            fail("instructions", f"must be a string; got {kind_of(instructions)}.")
        messages = [{"role": "system", "content": instructions}, *conversation]
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    for name in _SAME:
        if body.get(name) is not None:
            chat[name] = body[name]
    for name in _GATEWAY:
        if name in body:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    if (text := body.get("text")) is not None:
        _text(text, chat)
    if (reasoning := body.get("reasoning")) is not None:
        if not isinstance(reasoning, dict):
            fail("reasoning", f"must be an object; got {kind_of(reasoning)}.")
        if reasoning.get("effort") is not None:
            chat["reasoning_effort"] = reasoning["effort"]
    if request.stream:
        chat["stream"] = True
        # The usage comes as a chunk of its own, which the door's stream reads.
        chat["stream_options"] = {"include_usage": True}
    return parse_chat(orjson.dumps(chat))


def _input_messages(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if value is None:
        fail("input", "is required.")
    if not isinstance(value, list):
        fail("input", f"must be a string or an array of input items; got {kind_of(value)}.")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        path = f"input[{i}]"
        if not isinstance(item, dict):
            fail(path, f"must be an object; got {kind_of(item)}.")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            message = _message(item, path)
            if message is not None:
                messages.append(message)
        elif kind == "function_call":
            _function_call(item, path, messages)
        elif kind == "function_call_output":
            messages.append(_function_output(item, path))
        elif kind == "reasoning":
            continue  # another service's reasoning: nothing a channel here can take back
        else:
            raise InvalidRequest(
                f"'{path}.type' {shown(kind)} is not supported: the gateway takes messages, "
                f"function_call and function_call_output items.", param=f"{path}.type")
    if not messages:
        fail("input", "must contain at least one message.")
    return messages


def _message(item: dict[str, Any], path: str) -> dict[str, Any] | None:
    role = item.get("role")
    if role not in ("user", "system", "developer", "assistant"):
        fail(f"{path}.role", f"must be 'user', 'system', 'developer' or 'assistant'; got "
                             f"{shown(role)}.")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        fail(f"{path}.content", f"must be a string or an array of parts; got "
                                f"{kind_of(content)}.")
    if role == "assistant":
        texts = []
        for j, part in enumerate(content):
            where = f"{path}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in ("output_text", "input_text", "refusal"):
                fail(f"{where}.type", "must be 'output_text' or 'refusal' in an assistant "
                                      "message.")
            text = part.get("refusal" if kind == "refusal" else "text")
            if not isinstance(text, str):
                fail(where, "must carry its text as a string.")
            texts.append(text)
        return {"role": "assistant", "content": "".join(texts)}
    parts = [_part(part, f"{path}.content[{j}]", role) for j, part in enumerate(content)]
    return {"role": role, "content": parts}


def _part(part: Any, path: str, role: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        fail(path, f"must be an object; got {kind_of(part)}.")
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        text = part.get("text")
        if not isinstance(text, str):
            fail(f"{path}.text", f"must be a string; got {kind_of(text)}.")
        return {"type": "text", "text": text}
    if role != "user":
        fail(f"{path}.type", f"must be 'input_text' in a {role} message; got {shown(kind)}.")
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            fail(f"{path}.image_url", "is required: a URL or a data URL (images uploaded to "
                                      "OpenAI's files, by file_id, are not reachable here).")
        image: dict[str, Any] = {"url": url}
        if part.get("detail") in _IMAGE_DETAILS:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        data = part.get("file_data")
        if not isinstance(data, str) or not data:
            fail(f"{path}.file_data", "is required: files by file_id or file_url are not "
                                      "reachable through the gateway.")
        file = {"file_data": data}
        if isinstance(part.get("filename"), str):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    fail(f"{path}.type", f"must be 'input_text', 'input_image' or 'input_file'; got "
                         f"{shown(kind)}.")


def _function_call(item: dict[str, Any], path: str, messages: list[dict[str, Any]]) -> None:
    for name in ("call_id", "name", "arguments"):
        if not isinstance(item.get(name), str):
            fail(f"{path}.{name}", f"must be a string; got {kind_of(item.get(name))}.")
    call = {"id": item["call_id"], "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]}}
    last = messages[-1] if messages else None
    # A turn's text and its calls, or its parallel calls, are one assistant message.
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
        if not last.get("content"):
            last["content"] = None
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _function_output(item: dict[str, Any], path: str) -> dict[str, Any]:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        fail(f"{path}.call_id", "is required.")
    output = item.get("output")
    if isinstance(output, list):
        texts = []
        for j, part in enumerate(output):
            if not isinstance(part, dict) or part.get("type") != "input_text" or not isinstance(
                    part.get("text"), str):
                fail(f"{path}.output[{j}]", "must be an input_text part: a function's output "
                                            "reaches every kind of channel as text only.")
            texts.append(part["text"])
        output = "".join(texts)
    if not isinstance(output, str):
        fail(f"{path}.output", f"must be a string or an array of parts; got {kind_of(output)}.")
    return {"role": "tool", "tool_call_id": call_id, "content": output}


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        fail("tools", f"must be an array of tools; got {kind_of(tools)}.")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            fail(f"tools[{i}]", f"must be an object; got {kind_of(tool)}.")
        kind = tool.get("type")
        if kind != FUNCTION_TOOL:
            raise InvalidRequest(
                f"'tools[{i}].type' {shown(kind)} is a hosted tool, which the gateway does not "
                f"run: only function tools are supported.", param=f"tools[{i}].type",
                code="unsupported_tool")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            fail(f"tools[{i}].name", "is required.")
        function: dict[str, Any] = {"name": name}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in _TOOL_CHOICES:
        return choice
    if isinstance(choice, dict):
        if choice.get("type") == FUNCTION_TOOL and isinstance(choice.get("name"), str):
            return {"type": "function", "function": {"name": choice["name"]}}
        raise InvalidRequest(
            f"'tool_choice.type' {shown(choice.get('type'))} is not supported: only 'none', "
            f"'auto', 'required' or a function by name.", param="tool_choice.type")
    fail("tool_choice", f"must be 'none', 'auto', 'required' or a function; got "
                        f"{shown(choice)}.")


def _text(text: Any, chat: dict[str, Any]) -> None:
    if not isinstance(text, dict):
        fail("text", f"must be an object; got {kind_of(text)}.")
    if text.get("verbosity") is not None:
        chat["verbosity"] = text["verbosity"]
    fmt = text.get("format")
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return
    if kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
        return
    if kind != "json_schema":
        fail("text.format.type", f"must be 'text', 'json_object' or 'json_schema'; got "
                                 f"{shown(kind)}.")
    name = fmt.get("name")
    if not isinstance(name, str) or not name:
        fail("text.format.name", "is required.")
    schema: dict[str, Any] = {"name": name}
    for key in ("schema", "strict", "description"):
        if fmt.get(key) is not None:
            schema[key] = fmt[key]
    chat["response_format"] = {"type": "json_schema", "json_schema": schema}


# What a chat field is called on this door, for the errors the chat rules raise.
PARAMS = {"max_completion_tokens": "max_output_tokens", "response_format": "text.format",
          "messages": "input", "reasoning_effort": "reasoning.effort",
          "verbosity": "text.verbosity"}


def door_param(param: str | None) -> str | None:
    if param is None:
        return None
    head, dot, rest = param.partition(".")
    base = head.partition("[")[0]
    if base == "messages":
        # Instructions, a kept conversation and merged calls shift the messages: no index
        # of theirs is an index of `input`.
        return "input"
    renamed = PARAMS.get(base)
    return param if renamed is None else renamed + head[len(base):] + dot + rest
