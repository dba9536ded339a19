"""Provider kind `anthropic`: the Messages API behind the OpenAI chat completions format.

Pure translation, no I/O. Requests: system and developer messages go to `system`; tool results
become `tool_result` blocks in one user turn; same-role neighbours merge, since the API wants
turns to alternate; images become URL or base64 sources; `response_format` becomes the native
`output_config.format` (`json_object` as the schema "any object"). Answers come back as OpenAI
completions and chunks, tool calls numbered densely as OpenAI clients expect.

The API version sent is 2026-10-21, which refuses `temperature`, `top_p` and `top_k`; the
Messages API never had `seed` or penalties. Those sampling hints are dropped by the route's
parameter policy (routing/params.py) and named in `X-TokenMux-Dropped-Params`; a provider that
sends an older `anthropic-version` header passes the three on to the models that take them.
What else the Messages API cannot do is refused with a 400 naming the field, never dropped
unseen: `logprobs`, `logit_bias`, `audio`, `modalities`; and the hints themselves under
`strict_params`. An operator who prefers to drop a field lists it in the provider's
`ignore_params`. `n > 1` is served by fanning out (providers/fanout.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from tokenmux.api.anthropic_wire import FINISH_REASONS, IMAGE_MEDIA_TYPES, TOOL_CHOICES
from tokenmux.config.schema import Provider
from tokenmux.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamFailed,
)
from tokenmux.providers.base import Call, StreamState, UpstreamRequest, Usage
from tokenmux.providers.translate import (
    check_fields,
    completion_id,
    data_url,
    functions,
    load_answer,
    scrub,
    text_parts,
    tool_arguments,
    tool_choice_name,
    upstream_error,
)
from tokenmux.routing.catalog import Route
from tokenmux.routing.params import ANTHROPIC_API_VERSION, ANTHROPIC_OLD_SAMPLING, api_takes

API = "Anthropic"
API_VERSION = ANTHROPIC_API_VERSION
DEFAULT_MAX_TOKENS = 4096  # the API requires a cap; this one fits every current model

# Fields with no Messages API equivalent, and the value that asks for nothing: that value, or
# null, passes; any other is refused.
_UNSUPPORTED: dict[str, Any] = {
    "temperature": 1, "top_p": 1, "top_k": None, "presence_penalty": 0, "frequency_penalty": 0,
    "logprobs": False, "top_logprobs": 0, "logit_bias": {}, "seed": None, "audio": None,
    "modalities": ["text"], "prediction": None, "web_search_options": None,
    "reasoning_effort": None, "verbosity": None,
}
_HANDLED = frozenset({
    "model", "messages", "stream", "max_tokens", "max_completion_tokens", "stop", "tools",
    "tool_choice", "parallel_tool_calls", "response_format", "user", "n",
})


class AnthropicAdapter:
    def __init__(self, provider: Provider):
        self.url = provider.base_url.rstrip("/") + "/v1/messages"
        self.secret = provider.api_key
        headers = {"Content-Type": "application/json", "anthropic-version": API_VERSION}
        if provider.api_key:
            headers["x-api-key"] = provider.api_key
        headers.update(provider.headers)  # e.g. a newer anthropic-version, or anthropic-beta
        self.headers = headers
        self.ignored = frozenset(provider.ignore_params)
        # Under an API version that still takes them, the three hints go through as they came.
        self.sampling = tuple(api_takes(provider) & ANTHROPIC_OLD_SAMPLING)
        self.handled = _HANDLED | frozenset(self.sampling)

    # ---------------------------------------------------------------- request

    def build_request(self, call: Call) -> UpstreamRequest:
        native = call.request.native
        if call.native and native is not None:
            return UpstreamRequest(self.url, self._native_headers(native.headers),
                                   orjson.dumps(_native(native.body, call)))
        body = call.request.body
        ignored = self.ignored.union(call.dropped) if call.dropped else self.ignored
        check_fields(body, call.route, self.handled, _UNSUPPORTED, ignored, API)
        system, messages = _messages(body["messages"])
        out: dict[str, Any] = {
            "model": call.route.upstream_model,
            "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens")
            or DEFAULT_MAX_TOKENS,
            "messages": messages,
        }
        if system:
            out["system"] = system
        if (stop := body.get("stop")) is not None:
            out["stop_sequences"] = _stop_sequences(stop)
        if body.get("tools"):
            out["tools"] = [_tool(f) for f in functions(body["tools"])]
        if (choice := _tool_choice(body)) is not None:
            out["tool_choice"] = choice
        if (fmt := _output_format(body.get("response_format"))) is not None:
            out["output_config"] = {"format": fmt}
        if user := body.get("user") or body.get("safety_identifier"):
            out["metadata"] = {"user_id": str(user)}
        for name in self.sampling:
            if name not in call.dropped and body.get(name) is not None:
                out[name] = body[name]
        if call.request.stream:
            out["stream"] = True
        return UpstreamRequest(self.url, self.headers, orjson.dumps(out))

    def _native_headers(self, client: dict[str, str] | None) -> dict[str, str]:
        """The channel's headers, and the betas the client asked for besides the channel's."""
        beta = (client or {}).get("anthropic-beta")
        if not beta:
            return self.headers
        own = next((v for k, v in self.headers.items() if k.lower() == "anthropic-beta"), "")
        headers = {k: v for k, v in self.headers.items() if k.lower() != "anthropic-beta"}
        headers["anthropic-beta"] = f"{own},{beta}" if own else beta
        return headers

    # ---------------------------------------------------------------- answers

    def read_completion(self, raw: bytes, route: Route) -> tuple[dict[str, Any], Usage | None]:
        message = load_answer(raw, route)
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise UpstreamFailed(
                f"The upstream {route.provider!r} answered without a 'content' array.")
        text: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in message["content"]:
            kind = block.get("type")
            if kind == "text":
                text.append(block.get("text") or "")
            elif kind == "tool_use":
                calls.append({"id": block["id"], "type": "function", "function": {
                    "name": block["name"],
                    "arguments": orjson.dumps(block.get("input") or {}).decode()}})
        reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None,
                                 "refusal": None}
        if calls:
            reply["tool_calls"] = calls
        usage = read_usage(message.get("usage"))
        body = {
            "id": completion_id(message.get("id")),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": route.model,
            "choices": [{"index": 0, "message": reply, "logprobs": None,
                         "finish_reason": finish_reason(message.get("stop_reason"))}],
        }
        if usage is not None:
            body["usage"] = usage.as_openai()
        return body, usage

    def read_chunk(self, data: bytes, call: Call, state: StreamState) -> dict[str, Any] | None:
        name = call.route.provider
        event = load_answer(data, call.route, "sent a stream event that is not JSON")
        if not isinstance(event, dict):
            raise UpstreamFailed(f"The upstream {name!r} sent a malformed stream event.")
        memo = state.memo
        if memo is None:
            memo = state.memo = _Stream(int(time.time()), native=call.native)
        chunk = self._chunk(event, call, state, memo)
        if memo.native:
            # The door of this API relays the event itself; the chunk is the pipeline's.
            return {**(chunk or {"choices": []}), "native": event}
        return chunk

    def _chunk(self, event: dict[str, Any], call: Call, state: StreamState,
               memo: _Stream) -> dict[str, Any] | None:
        name = call.route.provider
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                text = delta.get("text") or ""
                state.text.append(text)
                return memo.chunk(call, {"content": text})
            if delta.get("type") == "input_json_delta":
                index = memo.tools.get(event.get("index"))
                if index is None or not delta.get("partial_json"):
                    return None
                return memo.chunk(call, {"tool_calls": [
                    {"index": index, "function": {"arguments": delta["partial_json"]}}]})
            return None  # thinking and signatures stay with the provider
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") != "tool_use":
                return None
            index = memo.tools[event.get("index")] = len(memo.tools)
            return memo.chunk(call, {"tool_calls": [{
                "index": index, "id": block.get("id"), "type": "function",
                "function": {"name": block.get("name"), "arguments": ""}}]})
        if kind == "message_start":
            message = event.get("message") or {}
            memo.id = completion_id(message.get("id"))
            memo.usage = message.get("usage") or {}
            return memo.chunk(call, {"role": "assistant", "content": ""})
        if kind == "message_delta":
            usage = {**memo.usage, **{k: v for k, v in (event.get("usage") or {}).items()
                                      if v is not None}}
            state.usage = read_usage(usage)
            reason = (event.get("delta") or {}).get("stop_reason")
            return memo.chunk(call, {}, finish_reason(reason))
        if kind == "message_stop":
            state.finished = True
            return None
        if kind == "error":
            error = event.get("error") or {}
            raise UpstreamFailed(f"The upstream {name!r} failed mid-stream: "
                                 f"{scrub(error.get('message'), self.secret) or error.get('type')}",
                                 overloaded=error.get("type") == "overloaded_error")
        return None  # ping, content_block_stop, and event types newer than this code

    def read_error(self, status: int, raw: bytes, route: Route,
                   retry_after: str | None) -> GatewayError:
        kind, message = _error_fields(raw)
        if kind == "timeout_error":
            status = 504
        # A rate limit keeps the gateway's own code: the provider's names no OpenAI client knows.
        return upstream_error(status, route, scrub(message, self.secret),
                              code=None if status == 429 else kind,
                              retry_after=retry_after, credentials_refused=status == 402)


@dataclass(slots=True)
class _Stream:
    """One stream's translation state."""

    created: int
    native: bool = False  # the request went natively: each event goes on as it came
    id: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    tools: dict[Any, int] = field(default_factory=dict)  # content block index → tool call index

    def chunk(self, call: Call, delta: dict[str, Any],
              reason: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": call.route.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": reason}]}


def finish_reason(stop_reason: str | None) -> str | None:
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(stop_reason, "stop")


def read_usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict) or "output_tokens" not in raw:
        return None
    # Anthropic's input_tokens leaves out cache reads and writes; OpenAI's prompt_tokens has all.
    cached = int(raw.get("cache_read_input_tokens") or 0)
    written = int(raw.get("cache_creation_input_tokens") or 0)
    return Usage(prompt_tokens=int(raw.get("input_tokens") or 0) + cached + written,
                 completion_tokens=int(raw.get("output_tokens") or 0), cached_tokens=cached)


def _native(body: dict[str, Any], call: Call) -> dict[str, Any]:
    """A Messages API request as its client sent it, for the channel's model; the sampling
    hints the route's policy leaves out are left out here too."""
    out = {name: value for name, value in body.items()
           if name != "stream" and name not in call.dropped}
    out["model"] = call.route.upstream_model
    if call.request.stream:
        out["stream"] = True
    return out


# ---------------------------------------------------------------- messages


def _messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            previous = turns[-1]["content"]
            # A tool's result must come first in the turn after the call.
            if blocks[0]["type"] == "tool_result":
                results = [b for b in previous if b["type"] == "tool_result"]
                others = [b for b in previous if b["type"] != "tool_result"]
                turns[-1]["content"] = results + blocks + others
            else:
                previous.extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for i, message in enumerate(messages):
        role = message["role"]
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), where))
        elif role == "user":
            add("user", _user_blocks(message.get("content"), where))
        elif role == "assistant":
            blocks = _text_blocks(message.get("content"), where)
            for j, tool_call in enumerate(message.get("tool_calls") or ()):
                blocks.append(_tool_use(tool_call, f"{where}.tool_calls[{j}]"))
            add("assistant", blocks)
        elif role == "tool":
            text = "".join(b["text"] for b in _text_blocks(message.get("content"), where))
            result: dict[str, Any] = {"type": "tool_result",
                                      "tool_use_id": message["tool_call_id"]}
            if text:
                result["content"] = text
            add("user", [result])
        else:
            raise InvalidRequest(f"Role '{role}' is not supported by Anthropic channels.",
                                 param=f"{where}.role")
    if not turns:
        raise InvalidRequest("An Anthropic channel needs at least one user or assistant "
                             "message besides system messages.", param="messages")
    return system, turns


def _text_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    # The API refuses empty text blocks, which text_parts leaves out.
    return [{"type": "text", "text": text} for text in text_parts(content, where, API)]


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_blocks(content, where)
    blocks = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url") or {}, f"{where}.content[{j}]"))
        else:
            raise InvalidRequest(f"Content parts of type '{kind}' are not supported by "
                                 "Anthropic channels.", param=f"{where}.content[{j}]")
    return blocks


def _image(image: dict[str, Any], where: str) -> dict[str, Any]:
    url = image.get("url") or ""
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    if url.startswith("data:"):
        media_type, data = data_url(url, where, IMAGE_MEDIA_TYPES, API)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type,
                                            "data": data}}
    raise InvalidRequest("An image URL must be http(s) or a base64 data URL.",
                         param=f"{where}.image_url.url")


def _tool_use(tool_call: dict[str, Any], where: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_call.get("id"),
            "name": (tool_call.get("function") or {}).get("name"),
            "input": tool_arguments(tool_call, where)}


# ---------------------------------------------------------------- options


def _stop_sequences(stop: Any) -> list[str]:
    sequences = [stop] if isinstance(stop, str) else list(stop)
    for sequence in sequences:
        if not sequence.strip():
            raise InvalidRequest("Anthropic channels refuse stop sequences made only of "
                                 "whitespace.", param="stop")
    return sequences


def _tool(function: dict[str, Any]) -> dict[str, Any]:
    out = {"name": function["name"],
           "input_schema": function.get("parameters") or {"type": "object", "properties": {}}}
    if function.get("description"):
        out["description"] = function["description"]
    if function.get("strict") is not None:
        out["strict"] = bool(function["strict"])
    return out


def _tool_choice(body: dict[str, Any]) -> dict[str, Any] | None:
    choice = body.get("tool_choice")
    parallel = body.get("parallel_tool_calls")
    if choice is None and parallel is not False:
        return None
    name = tool_choice_name(choice)
    if name is not None:
        out: dict[str, Any] = {"type": "tool", "name": name}
    elif choice == "none":
        return {"type": "none"}
    else:
        out = {"type": TOOL_CHOICES.get(str(choice), "auto")}
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def _output_format(response_format: Any) -> dict[str, Any] | None:
    if not response_format or response_format.get("type") == "text":
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        # "Any JSON object" is itself a schema, so the native structured output serves it.
        return {"type": "json_schema", "schema": {"type": "object"}}
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise InvalidRequest("'response_format.json_schema.schema' is required by Anthropic "
                                 "channels.", param="response_format.json_schema.schema")
        return {"type": "json_schema", "schema": schema}
    raise InvalidRequest(f"'response_format' type '{kind}' is not supported.",
                         param="response_format")


def _error_fields(raw: bytes) -> tuple[str | None, str | None]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return (str(error.get("type")) if error.get("type") else None,
                str(error.get("message") or "") or None)
    return None, None
