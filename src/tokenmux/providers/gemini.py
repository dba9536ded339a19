"""Provider kind `gemini`: Gemini's generateContent behind the OpenAI chat completions format.

Pure translation, no I/O. Requests: system and developer messages go to `systemInstruction`;
assistant turns are `model` turns; same-role neighbours merge; tool results become
`functionResponse` parts, named after the call they answer; images become `inlineData` (data URLs)
or `fileData` (other URLs); the JSON schema of each tool and of `response_format` goes through as
JSON schema (`parametersJsonSchema`, `responseJsonSchema`), so no keyword is lost in a conversion.
`n` is Gemini's own `candidateCount`.

Gemini gives a function call no id, so the gateway makes one. A thinking model's call carries a
`thoughtSignature` that must come back with the call in the next turn; it rides inside the id the
client is given (`call_<unique>__sig_<signature>`), so the client keeps it without knowing.

Gemini may always call several functions at once and cannot be told not to: under
`parallel_tool_calls: false` the gateway keeps each answer's first call (in a JSON answer the
pipeline trims and says so in `X-TokenMux-Trimmed-Tool-Calls`; a stream leaves the later calls
out as they come).

What Gemini cannot do is refused with a 400 naming the field (see _UNSUPPORTED), unless the
operator lists the field in the provider's `ignore_params`; sampling hints a model does not take
are dropped by the route's parameter policy (routing/params.py).
"""

from __future__ import annotations

import mimetypes
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from tokenmux.config.schema import Provider
from tokenmux.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamFailed,
)
from tokenmux.ids import unique
from tokenmux.providers import gemini_embed
from tokenmux.providers.base import Call, EmbedCall, StreamState, UpstreamRequest, Usage
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

API = "Gemini"
_SIGNATURE = "__sig_"

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "stop",
    "OTHER": "stop",
    "MALFORMED_FUNCTION_CALL": "stop",
}

_HANDLED = frozenset({
    "model", "messages", "stream", "max_tokens", "max_completion_tokens", "stop", "tools",
    "tool_choice", "response_format", "n", "temperature", "top_p", "top_k", "presence_penalty",
    "frequency_penalty", "seed", "user",  # the ledger keeps `user`; Gemini has no such field
    "parallel_tool_calls",  # false: the gateway keeps the first call (see above)
})
# Fields with no Gemini equivalent, and the value that asks for nothing.
_UNSUPPORTED: dict[str, Any] = {
    "logprobs": False, "top_logprobs": 0, "logit_bias": {}, "audio": None,
    "modalities": ["text"], "prediction": None, "web_search_options": None,
    "reasoning_effort": None, "verbosity": None,
}


class GeminiAdapter:
    def __init__(self, provider: Provider):
        self.base = provider.base_url.rstrip("/") + "/models/"
        self.secret = provider.api_key
        headers = {"Content-Type": "application/json"}
        if provider.api_key:
            # A header, never `?key=`, so that the key stays out of every logged URL.
            headers["x-goog-api-key"] = provider.api_key
        headers.update(provider.headers)
        self.headers = headers
        self.ignored = frozenset(provider.ignore_params)

    # ---------------------------------------------------------------- request

    def build_request(self, call: Call) -> UpstreamRequest:
        body = call.request.body
        ignored = self.ignored.union(call.dropped) if call.dropped else self.ignored
        check_fields(body, call.route, _HANDLED, _UNSUPPORTED, ignored, API)
        system, contents = _contents(body["messages"])
        out: dict[str, Any] = {"contents": contents}
        if system:
            out["systemInstruction"] = {"parts": [{"text": text} for text in system]}
        if body.get("tools"):
            out["tools"] = [{"functionDeclarations": [
                _declaration(f) for f in functions(body["tools"])]}]
        if (config := _tool_config(body.get("tool_choice"))) is not None:
            out["toolConfig"] = config
        if generation := _generation_config(body, call.dropped):
            out["generationConfig"] = generation
        model = call.route.upstream_model
        url = (f"{self.base}{model}:streamGenerateContent?alt=sse" if call.request.stream
               else f"{self.base}{model}:generateContent")
        return UpstreamRequest(url, self.headers, orjson.dumps(out))

    def build_embed_request(self, call: EmbedCall) -> UpstreamRequest:
        return gemini_embed.embed_request(self.base, self.headers, self.ignored, call)

    def read_embeddings(self, raw: bytes, call: EmbedCall) -> tuple[dict[str, Any], Usage | None]:
        return gemini_embed.embed_answer(raw, call)

    # ---------------------------------------------------------------- answers

    def read_completion(self, raw: bytes, route: Route) -> tuple[dict[str, Any], Usage | None]:
        answer = load_answer(raw, route)
        if not isinstance(answer, dict):
            raise UpstreamFailed(f"The upstream {route.provider!r} answered with a malformed "
                                 "body.")
        choices = []
        for i, candidate in enumerate(answer.get("candidates") or ()):
            texts, calls = _parts(candidate)
            message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None,
                                       "refusal": None}
            if calls:
                message["tool_calls"] = calls
            choices.append({"index": candidate.get("index", i), "message": message,
                            "logprobs": None,
                            "finish_reason": finish_reason(candidate.get("finishReason"),
                                                           bool(calls)) or "stop"})
        if not choices:
            # A blocked prompt: an answer with nothing in it, and the reason it is empty.
            choices.append({"index": 0, "message": {"role": "assistant", "content": "",
                                                    "refusal": None},
                            "logprobs": None, "finish_reason": "content_filter"})
        usage = read_usage(answer.get("usageMetadata"))
        body = {"id": completion_id(answer.get("responseId")), "object": "chat.completion",
                "created": int(time.time()), "model": route.model, "choices": choices}
        if usage is not None:
            body["usage"] = usage.as_openai()
        return body, usage

    def read_chunk(self, data: bytes, call: Call, state: StreamState) -> dict[str, Any] | None:
        answer = load_answer(data, call.route, "sent a stream event that is not JSON")
        if not isinstance(answer, dict):
            raise UpstreamFailed(f"The upstream {call.route.provider!r} sent a malformed "
                                 "stream event.")
        if error := answer.get("error"):
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise UpstreamFailed(f"The upstream {call.route.provider!r} failed mid-stream: "
                                 f"{scrub(message, self.secret)}")
        memo = state.memo
        if memo is None:
            memo = state.memo = _Stream(completion_id(answer.get("responseId")),
                                        int(time.time()))
        if (usage := read_usage(answer.get("usageMetadata"))) is not None:
            state.usage = usage
        choices = []
        for i, candidate in enumerate(answer.get("candidates") or ()):
            index = candidate.get("index", i)
            texts, calls = _parts(candidate)
            delta: dict[str, Any] = {}
            if index not in memo.started:
                memo.started.add(index)
                delta["role"] = "assistant"
                # A call alone leaves the content null, as in the JSON answer (and OpenAI's).
                delta["content"] = None if calls and not texts else ""
            if texts:
                delta["content"] = "".join(texts)
                state.text.append(delta["content"])
            if calls and call.request.body.get("parallel_tool_calls") is False:
                # One call per answer was asked for: the later ones are left out as they come.
                calls = calls[:max(0, 1 - memo.calls.get(index, 0))]
            if calls:
                # Gemini sends each call whole: one delta carries id, name and all arguments.
                first = memo.calls.get(index, 0)
                memo.calls[index] = first + len(calls)
                delta["tool_calls"] = [{"index": first + k, **c} for k, c in enumerate(calls)]
            reason = candidate.get("finishReason")
            if reason:
                memo.finished.add(index)
            choices.append({"index": index, "delta": delta, "logprobs": None,
                            "finish_reason": finish_reason(reason, memo.calls.get(index, 0) > 0)})
        if not choices and (answer.get("promptFeedback") or {}).get("blockReason"):
            memo.blocked = True
            choices.append({"index": 0, "delta": {"role": "assistant", "content": ""},
                            "logprobs": None, "finish_reason": "content_filter"})
        # Done when every candidate that started has finished: Gemini may send fewer than the
        # `candidateCount` asked for, and a complete answer must not look cut.
        state.finished = memo.blocked or (bool(memo.started) and memo.finished >= memo.started)
        if not choices:
            return None  # a trailing usage-only event
        return {"id": memo.id, "object": "chat.completion.chunk", "created": memo.created,
                "model": call.route.model, "choices": choices}

    def read_error(self, status: int, raw: bytes, route: Route,
                   retry_after: str | None) -> GatewayError:
        reason, message = _error_fields(raw)
        # A rate limit keeps the gateway's own code: the provider's names no OpenAI client knows.
        return upstream_error(status, route, scrub(message, self.secret),
                              code=None if status == 429 else reason,
                              retry_after=retry_after,
                              credentials_refused=reason == "API_KEY_INVALID")


@dataclass(slots=True)
class _Stream:
    """One stream's translation state."""

    id: str
    created: int
    blocked: bool = False  # the prompt was refused: nothing more will come
    started: set[int] = field(default_factory=set)
    calls: dict[int, int] = field(default_factory=dict)  # candidate → tool calls so far
    finished: set[int] = field(default_factory=set)


def finish_reason(reason: str | None, called: bool) -> str | None:
    if reason is None:
        return None
    # Gemini stops with STOP after a function call; OpenAI clients look for tool_calls.
    if called and reason == "STOP":
        return "tool_calls"
    return FINISH_REASONS.get(reason, "stop")


def read_usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    thoughts = int(raw.get("thoughtsTokenCount") or 0)
    # Thinking is billed as output, and OpenAI counts reasoning tokens in completion_tokens.
    return Usage(prompt_tokens=int(raw.get("promptTokenCount") or 0),
                 completion_tokens=int(raw.get("candidatesTokenCount") or 0) + thoughts,
                 cached_tokens=int(raw.get("cachedContentTokenCount") or 0),
                 reasoning_tokens=thoughts)


def _parts(candidate: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if "functionCall" in part:
            call = part["functionCall"]
            call_id = call.get("id") or unique("call_")
            if signature := part.get("thoughtSignature"):
                # URL-safe and unpadded: an id another provider would accept too.
                call_id += _SIGNATURE + signature.replace("+", "-").replace("/", "_").rstrip("=")
            calls.append({"id": call_id, "type": "function", "function": {
                "name": call.get("name"), "arguments": orjson.dumps(call.get("args") or {})
                .decode()}})
        elif part.get("text") and not part.get("thought"):  # thoughts are not the answer
            texts.append(part["text"])
    return texts, calls


# ---------------------------------------------------------------- messages


def _contents(messages: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id → function name, for the results

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for i, message in enumerate(messages):
        role, where = message["role"], f"messages[{i}]"
        if role in ("system", "developer"):
            system.extend(text_parts(message.get("content"), where, API))
        elif role == "user":
            add("user", _user_parts(message.get("content"), where))
        elif role == "assistant":
            parts: list[dict[str, Any]] = [
                {"text": t} for t in text_parts(message.get("content"), where, API)]
            for j, tool_call in enumerate(message.get("tool_calls") or ()):
                name = str((tool_call.get("function") or {}).get("name"))
                names[str(tool_call.get("id"))] = name
                part: dict[str, Any] = {"functionCall": {
                    "name": name, "args": tool_arguments(tool_call, f"{where}.tool_calls[{j}]")}}
                _, _, signature = str(tool_call.get("id")).partition(_SIGNATURE)
                if signature:
                    part["thoughtSignature"] = (signature.replace("-", "+").replace("_", "/")
                                                + "=" * (-len(signature) % 4))
                parts.append(part)
            add("model", parts)
        elif role == "tool":
            answered = names.get(message["tool_call_id"])
            if answered is None:
                raise InvalidRequest("A tool message must answer a tool call of an earlier "
                                     "assistant message (Gemini needs the function's name).",
                                     param=f"{where}.tool_call_id")
            add("user", [{"functionResponse": {"name": answered, "response": _tool_result(
                "".join(text_parts(message.get("content"), where, API)))}}])
        else:
            raise InvalidRequest(f"Role '{role}' is not supported by Gemini channels.",
                                 param=f"{where}.role")
    if not contents:
        raise InvalidRequest("A Gemini channel needs at least one user or assistant message "
                             "besides system messages.", param="messages")
    return system, contents


def _tool_result(text: str) -> dict[str, Any]:
    # Gemini wants an object; a tool that answered with one keeps its shape.
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"result": text}


def _user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return [{"text": t} for t in text_parts(content, where, API)]
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            parts.append(_image((part.get("image_url") or {}).get("url") or "",
                                f"{where}.content[{j}]"))
        else:
            raise InvalidRequest(f"Content parts of type '{kind}' are not supported by Gemini "
                                 "channels.", param=f"{where}.content[{j}]")
    return parts


def _image(url: str, where: str) -> dict[str, Any]:
    if url.startswith("data:"):
        media_type, data = data_url(url, where, None, API)
        return {"inlineData": {"mimeType": media_type, "data": data}}
    guessed = mimetypes.guess_type(url.split("?", 1)[0])[0]
    if not guessed or not guessed.startswith("image/"):
        raise InvalidRequest("The type of an image URL must show in its name (.png, .jpg, "
                             ".webp...) for a Gemini channel, or send it as a data URL.",
                             param=f"{where}.image_url.url")
    return {"fileData": {"mimeType": guessed, "fileUri": url}}


# ---------------------------------------------------------------- options


def _declaration(function: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        out["description"] = function["description"]
    if function.get("parameters"):
        out["parametersJsonSchema"] = function["parameters"]
    return out


def _tool_config(choice: Any) -> dict[str, Any] | None:
    name = tool_choice_name(choice)
    if name is not None:
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    if choice is None:
        return None
    mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]
    return {"functionCallingConfig": {"mode": mode}}


def _generation_config(body: dict[str, Any], dropped: tuple[str, ...]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if limit := body.get("max_completion_tokens") or body.get("max_tokens"):
        config["maxOutputTokens"] = limit
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"),
                         ("presence_penalty", "presencePenalty"),
                         ("frequency_penalty", "frequencyPenalty"), ("seed", "seed")):
        if body.get(ours) is not None and ours not in dropped:
            config[theirs] = body[ours]
    if (stop := body.get("stop")) is not None:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if (n := body.get("n")) and n > 1:
        config["candidateCount"] = n
    response_format = body.get("response_format") or {}
    kind = response_format.get("type")
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            config["responseJsonSchema"] = schema
    elif kind not in (None, "text", "json_object"):
        raise InvalidRequest(f"'response_format' type '{kind}' is not supported.",
                             param="response_format")
    return config


def _error_fields(raw: bytes) -> tuple[str | None, str | None]:
    """(the error's reason or status, its message)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None
    reason = next((d.get("reason") for d in error.get("details") or ()
                   if isinstance(d, dict) and d.get("reason")), None)
    return reason or error.get("status"), str(error.get("message") or "") or None
