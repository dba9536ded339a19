"""`POST /v1/messages` bodies: checked as the Messages API checks them, and translated into the
one internal request, an OpenAI chat completion.

The body is kept as it came beside the translation (`ChatRequest.native`): a channel of kind
`anthropic` is sent it nearly untouched, so prompt-caching markers, citations, thinking blocks and
server tools survive. What only the Messages API can carry (documents, server tools, images in a
tool result, containers, MCP servers) is left out of the translation and named in
`native.untranslated`: a channel of another kind refuses the request rather than answer without
it. `thinking` becomes OpenAI's `reasoning_effort` for the OpenAI-kind channels of a model the
catalog says reasons (`native.per_kind`); the other hints that only shape how the answer is drawn
(`service_tier`, `speed`, `cache_control`) go to Anthropic channels only.

Error paths are the Messages API's own (`messages.2.content.0.source.data`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import orjson

from tokenmux.api.anthropic_wire import IMAGE_MEDIA_TYPES, TOOL_CHOICE_NAMES
from tokenmux.api.chat import ChatRequest, Native, json_object
from tokenmux.api.messages import check_messages
from tokenmux.api.schema import MAX_DEPTH, MAX_OUTPUT_TOKENS, check_depth, check_fields, kind_of
from tokenmux.errors import InvalidRequest
from tokenmux.routing.params import ANTHROPIC_OLD_SAMPLING, ANTHROPIC_SAMPLING_UNTIL

KIND = "anthropic"
# Top-level fields of the current Messages API, by how the door treats them.
_READ = frozenset({"model", "messages", "max_tokens", "system", "stop_sequences", "stream",
                   "tools", "tool_choice", "metadata", "thinking", "output_config"})
_HINTS = frozenset({"cache_control", "service_tier", "speed", "inference_geo"})  # native only
_NATIVE_ONLY = frozenset({"container", "mcp_servers", "context_management"})
_COUNT_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking",
                           "output_config", "mcp_servers", "context_management", "cache_control"})
_NATIVE_BLOCKS = frozenset({"document", "search_result", "server_tool_use",
                            "web_search_tool_result", "web_fetch_tool_result",
                            "code_execution_tool_result", "container_upload",
                            "mcp_tool_use", "mcp_tool_result"})
_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})  # only their model reads them


def _fail(path: str, message: str) -> NoReturn:
    raise InvalidRequest(f"{path}: {message}", param=path)


class _Translation:
    """One body's translation, noting the first thing it could not carry."""

    def __init__(self) -> None:
        self.untranslated: str | None = None

    def lost(self, path: str) -> None:
        if self.untranslated is None:
            self.untranslated = path


def parse_messages(raw: bytes, version: str | None = None, beta: str | None = None,
                   reasons: Callable[[str], bool] | None = None) -> ChatRequest:
    """The request of `POST /v1/messages`, under the client's `anthropic-version`, with its
    `anthropic-beta` header (for Anthropic channels); REASONS tells whether the catalog says a
    model reasons (its OpenAI-kind channels are then sent the `thinking` as an effort)."""
    body = _load(raw)
    old = version is not None and version < ANTHROPIC_SAMPLING_UNTIL
    for name in body:
        if name in _READ or name in _HINTS or name in _NATIVE_ONLY:
            continue
        if not (old and name in ANTHROPIC_OLD_SAMPLING):
            _fail(name, "Extra inputs are not permitted")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        _fail("max_tokens", "Field required" if max_tokens is None
              else f"Input should be a valid integer; got {kind_of(max_tokens)}")
    if not 1 <= max_tokens <= MAX_OUTPUT_TOKENS:
        _fail("max_tokens", f"must be from 1 to {MAX_OUTPUT_TOKENS}")
    chat, translation = _translate(body)
    chat["max_tokens"] = max_tokens
    stream = body.get("stream") is True
    if body.get("stream") not in (None, True, False):
        _fail("stream", "Input should be a valid boolean")
    if stream:
        chat["stream"] = True
    if (stop := body.get("stop_sequences")) is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            _fail("stop_sequences", "Input should be a valid list of strings")
        if stop:
            chat["stop"] = stop
    user = _user(body.get("metadata"))
    if user is not None:
        chat["user"] = user
    for name in ANTHROPIC_OLD_SAMPLING & body.keys():
        chat[name] = body[name]
    for name in _NATIVE_ONLY & body.keys():
        translation.lost(name)
    check_messages(chat["messages"])
    check_fields(chat)
    native = Native(KIND, body, chat["messages"], translation.untranslated,
                    {"anthropic-beta": beta} if beta else None)
    if (effort := _effort(body)) is not None and reasons is not None and reasons(body["model"]):
        native.per_kind = {"openai": {"reasoning_effort": effort}}
    # The door answers with usage in every stream: its own final event carries it.
    return ChatRequest(chat, body["model"], stream, True, max_tokens, user, [], native=native)


def parse_count(raw: bytes) -> ChatRequest:
    """The body of `POST /v1/messages/count_tokens`: a message request without `max_tokens`."""
    body = _load(raw)
    for name in body:
        if name not in _COUNT_FIELDS:
            _fail(name, "Extra inputs are not permitted")
    chat, translation = _translate(body)
    check_messages(chat["messages"])
    return ChatRequest(chat, body["model"], False, None, None, None, [],
                       native=Native(KIND, body, chat["messages"], translation.untranslated))


def _load(raw: bytes) -> dict[str, Any]:
    body = json_object(raw)
    check_depth(body, MAX_DEPTH)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        _fail("model", "Field required" if model is None else "Input should be a valid string")
    return body


def _translate(body: dict[str, Any]) -> tuple[dict[str, Any], _Translation]:
    translation = _Translation()
    messages: list[dict[str, Any]] = []
    if (system := body.get("system")) is not None:
        messages.append({"role": "system", "content": _system(system)})
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        _fail("messages", "Field required" if turns is None
              else "Input should be a non-empty list of messages")
    for i, turn in enumerate(turns):
        messages.extend(_turn(turn, f"messages.{i}", translation))
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    if (tools := body.get("tools")) is not None:
        if not isinstance(tools, list):
            _fail("tools", "Input should be a valid list")
        functions = [f for i, tool in enumerate(tools)
                     if (f := _tool(tool, f"tools.{i}", translation)) is not None]
        if functions:
            chat["tools"] = functions
    if (choice := body.get("tool_choice")) is not None:
        _tool_choice(choice, chat)
    if (config := body.get("output_config")) is not None:
        if not isinstance(config, dict):
            _fail("output_config", "Input should be a valid dictionary")
        fmt = config.get("format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            if not isinstance(fmt.get("schema"), dict):
                _fail("output_config.format.schema", "Field required")
            chat["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "output", "schema": fmt["schema"]}}
        elif fmt is not None:
            _fail("output_config.format", "Input should be a valid format object")
    if (thinking := body.get("thinking")) is not None and (
            not isinstance(thinking, dict)
            or thinking.get("type") not in ("enabled", "disabled", "adaptive")):
        _fail("thinking", "Input should be an object of type 'enabled', 'disabled' or "
              "'adaptive'")
    return chat, translation


def _system(system: Any) -> Any:
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        _fail("system", "Input should be a valid string or list of text blocks")
    parts = []
    for j, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(
                block.get("text"), str):
            _fail(f"system.{j}", "Input should be a text block")
        parts.append({"type": "text", "text": block["text"]})
    return parts


def _turn(turn: Any, where: str, translation: _Translation) -> list[dict[str, Any]]:
    if not isinstance(turn, dict):
        _fail(where, f"Input should be a message object; got {kind_of(turn)}")
    role = turn.get("role")
    if role not in ("user", "assistant"):
        _fail(f"{where}.role", "Input should be 'user' or 'assistant'")
    content = turn.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        _fail(f"{where}.content", "Input should be a valid string or list of content blocks")
    if role == "assistant":
        return [_assistant(content, where, translation)]
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        path = f"{where}.content.{j}"
        kind = _block_type(block, path)
        if kind == "text":
            parts.append({"type": "text", "text": _text(block, path)})
        elif kind == "image":
            parts.append(_image(block, path))
        elif kind == "tool_result":
            results.append(_tool_result(block, path, translation))
        elif kind in _NATIVE_BLOCKS:
            translation.lost(path)
        elif kind not in _DROPPED_BLOCKS:
            _fail(f"{path}.type", f"'{kind}' is not a content block a user message can hold")
    # Tool results answer the calls of the turn before: in OpenAI's format they come first,
    # as messages of their own.
    if parts:
        results.append({"role": "user", "content": parts})
    return results


def _assistant(content: list[Any], where: str, translation: _Translation) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        path = f"{where}.content.{j}"
        kind = _block_type(block, path)
        if kind == "text":
            texts.append(_text(block, path))
        elif kind == "tool_use":
            name, input_ = block.get("name"), block.get("input")
            if not isinstance(block.get("id"), str) or not isinstance(name, str) \
                    or not isinstance(input_, dict):
                _fail(path, "a tool_use block needs an 'id', a 'name' and an 'input' object")
            calls.append({"id": block["id"], "type": "function", "function": {
                "name": name, "arguments": orjson.dumps(input_).decode()}})
        elif kind in _NATIVE_BLOCKS:
            translation.lost(path)
        elif kind not in _DROPPED_BLOCKS:
            _fail(f"{path}.type", f"'{kind}' is not a content block an assistant message "
                  "can hold")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        message["tool_calls"] = calls
    return message


def _block_type(block: Any, path: str) -> str:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        _fail(path, "Input should be a content block object with a 'type'")
    return str(block["type"])


def _text(block: dict[str, Any], path: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        _fail(f"{path}.text", "Field required")
    return text


def _image(block: dict[str, Any], path: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        _fail(f"{path}.source", "Field required")
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    elif source.get("type") == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if media_type not in IMAGE_MEDIA_TYPES:
            _fail(f"{path}.source.media_type", "Input should be 'image/jpeg', 'image/png', "
                  "'image/gif' or 'image/webp'")
        if not isinstance(data, str) or not data:
            _fail(f"{path}.source.data", "Field required")
        url = f"data:{media_type};base64,{data}"
    else:
        _fail(f"{path}.source", "Input should be a base64 or url image source")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result(block: dict[str, Any], path: str,
                 translation: _Translation) -> dict[str, Any]:
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        _fail(f"{path}.tool_use_id", "Field required")
    content = block.get("content")
    if content is None or isinstance(content, str):
        text = content or ""
    elif isinstance(content, list):
        texts = []
        for k, inner in enumerate(content):
            kind = _block_type(inner, f"{path}.content.{k}")
            if kind == "text":
                texts.append(_text(inner, f"{path}.content.{k}"))
            else:
                translation.lost(f"{path}.content.{k}")
        text = "\n".join(texts)
    else:
        _fail(f"{path}.content", "Input should be a valid string or list of blocks")
    if block.get("is_error"):
        # OpenAI's tool message has no error flag: the text says it.
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}


def _tool(tool: Any, path: str, translation: _Translation) -> dict[str, Any] | None:
    if not isinstance(tool, dict):
        _fail(path, "Input should be a tool object")
    if tool.get("type") not in (None, "custom"):
        translation.lost(path)  # a server tool (web search, code execution, …)
        return None
    name, schema = tool.get("name"), tool.get("input_schema")
    if not isinstance(name, str) or not name:
        _fail(f"{path}.name", "Field required")
    if not isinstance(schema, dict):
        _fail(f"{path}.input_schema", "Field required")
    function: dict[str, Any] = {"name": name, "parameters": schema}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "tool":
        if not isinstance(choice.get("name"), str):
            _fail("tool_choice.name", "Field required")
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif kind in TOOL_CHOICE_NAMES:
        chat["tool_choice"] = TOOL_CHOICE_NAMES[str(kind)]
    else:
        _fail("tool_choice.type", "Input should be 'auto', 'any', 'tool' or 'none'")
    if "tools" not in chat:  # OpenAI's format refuses a choice among no tools
        chat.pop("tool_choice", None)
    elif choice.get("disable_parallel_tool_use") is True:
        chat["parallel_tool_calls"] = False


def _effort(body: dict[str, Any]) -> str | None:
    """OpenAI's reasoning effort for the request's `output_config.effort`, else its thinking
    budget: under 4,096 tokens low, under 16,384 medium, else high."""
    effort = (body.get("output_config") or {}).get("effort")
    if effort in ("low", "medium", "high"):
        return str(effort)
    if effort == "max":
        return "high"
    thinking = body.get("thinking") or {}
    if thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        _fail("thinking.budget_tokens", "Input should be a positive integer")
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


def _user(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        _fail("metadata", "Input should be a valid dictionary")
    user = metadata.get("user_id")
    if user is not None and not isinstance(user, str):
        _fail("metadata.user_id", "Input should be a valid string")
    return user or None
