"""The Responses door's answer: a chat completion rendered as a `response` object.

    choices[0].message.content     →  output: message item, one `output_text` part
    choices[0].message.refusal     →  output: message item, one `refusal` part
    choices[0].message.tool_calls  →  output: one `function_call` item each
    finish_reason length           →  status incomplete, incomplete_details max_output_tokens
    finish_reason content_filter   →  status incomplete, incomplete_details content_filter
    usage prompt/completion/cached/reasoning  →  input/output tokens and their details

Ids are derived from the request id and the upstream's completion id, so an answer replayed
from the idempotency store (the same completion, the same request id) is the same response.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from tokenmux.api.responses import ResponsesRequest

INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def derived_id(prefix: str, *parts: str) -> str:
    digest = hashlib.blake2b("\x00".join(parts).encode(), digest_size=12).hexdigest()
    return prefix + digest


def response_id(request_id: str, completion_id: str) -> str:
    return derived_id("resp_", request_id, completion_id)


def message_item(response: str, text: str | None, refusal: str | None,
                 status: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text:
        content.append(output_text(text))
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": derived_id("msg_", response), "type": "message", "role": "assistant",
            "status": status, "content": content}


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(response: str, index: int, call_id: str, name: str, arguments: str,
              status: str) -> dict[str, Any]:
    return {"id": derived_id("fc_", response, str(index)), "type": "function_call",
            "status": status, "call_id": call_id, "name": name, "arguments": arguments}


def usage(chat: dict[str, Any] | None) -> dict[str, Any] | None:
    if chat is None:
        return None
    prompt, completion = chat.get("prompt_tokens") or 0, chat.get("completion_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": (chat.get("prompt_tokens_details") or {}).get("cached_tokens") or 0,
            "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": (
            chat.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0},
        "total_tokens": prompt + completion,
    }


def shell(request: ResponsesRequest, rid: str, model: str, created: float,
          status: str) -> dict[str, Any]:
    """The response object without its output: what a stream's first events carry."""
    body = request.body
    text = body.get("text") or {}
    return {
        "id": rid, "object": "response", "created_at": created, "status": status,
        "background": False, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"), "model": model, "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "service_tier": body.get("service_tier"), "store": request.stored,
        "temperature": body.get("temperature"),
        "text": {"format": text.get("format") or {"type": "text"},
                 "verbosity": text.get("verbosity") or "medium"},
        "tool_choice": body.get("tool_choice") or "auto", "tools": body.get("tools") or [],
        "top_p": body.get("top_p"), "truncation": body.get("truncation") or "disabled",
        "usage": None, "user": body.get("user"), "metadata": body.get("metadata") or {},
    }


def finished(response: dict[str, Any], reason: str | None) -> dict[str, Any]:
    """RESPONSE marked done, as the finish reason says."""
    incomplete = INCOMPLETE.get(reason or "")
    response["status"] = "completed" if incomplete is None else "incomplete"
    response["incomplete_details"] = None if incomplete is None else {"reason": incomplete}
    return response


def render(request: ResponsesRequest, request_id: str, chat: dict[str, Any]) -> dict[str, Any]:
    """A chat completion (the pipeline's answer) as the response object."""
    rid = response_id(request_id, str(chat.get("id")))
    response = shell(request, rid, str(chat.get("model")),
                     float(chat.get("created") or time.time()), "completed")
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    reason = choice.get("finish_reason")
    status = "incomplete" if reason in INCOMPLETE else "completed"
    output = []
    if message.get("content") or message.get("refusal"):
        output.append(message_item(rid, message.get("content"), message.get("refusal"), status))
    for i, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        output.append(call_item(rid, i, str(call.get("id")), str(function.get("name")),
                                function.get("arguments") or "{}", "completed"))
    response["output"] = output
    response["usage"] = usage(chat.get("usage"))
    return finished(response, reason)


def assistant_message(output: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The response's output as the chat message a continuation sends back."""
    text: list[str] = []
    calls = []
    for item in output:
        if item["type"] == "message":
            text += [part.get("text") or part.get("refusal") or "" for part in item["content"]]
        elif item["type"] == "function_call":
            calls.append({"id": item["call_id"], "type": "function",
                          "function": {"name": item["name"], "arguments": item["arguments"]}})
    if not text and not calls:
        return None
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = calls
    return message
