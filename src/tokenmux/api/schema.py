"""The shape of a chat completions request: every field the gateway or an adapter reads.

Adapters and the token counter trust what passes here, so a client's mistake is a 400 naming the
field's path (`messages[0].tool_calls[1].function.arguments`), never an exception deep inside,
and no value can make a request cost more than its size: `n` is at most MAX_CHOICES, output caps
at most MAX_OUTPUT_TOKENS, and JSON nesting at most MAX_DEPTH levels. `null` counts as absent,
as OpenAI's API takes it. Fields this module does not know pass through untouched.

Hand-written checks, not a schema engine: a typical request (a model and a few messages) costs a
dict lookup per field and a type test per message, and nothing is copied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from tokenmux.errors import InvalidRequest

MAX_CHOICES = 128  # OpenAI's own limit on `n`
MAX_OUTPUT_TOKENS = 1_000_000
MAX_DEPTH = 64  # JSON nesting; deeper than any real request, far below what a codec refuses
MAX_STOP = 4
MAX_TOP_LOGPROBS = 20
_INT64 = 2**63

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_TOOL_CHOICES = ("none", "auto", "required")
_FORMATS = ("text", "json_object", "json_schema")


def fail(param: str, message: str) -> NoReturn:
    raise InvalidRequest(f"'{param}' {message}", param=param)


def shown(value: Any) -> str:
    """A value as an error message shows it: a scalar itself (cut short), else its kind."""
    if isinstance(value, str | int | float):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return kind_of(value)


def kind_of(value: Any) -> str:
    """How a JSON value is named in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


# ---------------------------------------------------------------- depth


def check_depth(value: Any, levels: int) -> None:
    """Refuses a value with more than `levels` containers nested in it, itself counted.

    Called on the parts of a request that are not plain strings (the top-level options, and
    messages with more than a role and a string), so that a typical request walks nothing."""
    level = [value]
    for _ in range(levels):
        level = [c for v in level for c in (v.values() if type(v) is dict else v)
                 if type(c) is dict or type(c) is list]
        if not level:
            return
    raise InvalidRequest(f"The request body is nested deeper than {MAX_DEPTH} levels.",
                         code="nesting_too_deep")


# ---------------------------------------------------------------- scalars


def _string(value: Any, param: str) -> None:
    if not isinstance(value, str):
        fail(param, f"must be a string; got {kind_of(value)}.")


def _boolean(value: Any, param: str) -> None:
    if value is not True and value is not False:
        fail(param, f"must be a boolean; got {kind_of(value)}.")


def _object(value: Any, param: str) -> None:
    if not isinstance(value, dict):
        fail(param, f"must be an object; got {kind_of(value)}.")


def _strings(value: Any, param: str) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        fail(param, "must be an array of strings.")


def _number(low: float, high: float) -> Callable[[Any, str], None]:
    def check(value: Any, param: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not low <= value <= high:
            fail(param, f"must be a number between {low} and {high}; got {shown(value)}.")
    return check


def _integer(low: int, high: int, what: str) -> Callable[[Any, str], None]:
    def check(value: Any, param: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            fail(param, f"must be {what}; got {shown(value)}.")
    return check


def _stop(value: Any, param: str) -> None:
    if isinstance(value, str):
        return
    _strings(value, param)
    if len(value) > MAX_STOP:
        fail(param, f"takes at most {MAX_STOP} sequences; got {len(value)}.")


def _optional(value: dict[str, Any], param: str, **checks: Callable[[Any, str], None]) -> None:
    """Checks each of the object's fields that is present and not null."""
    for name, check in checks.items():
        if (field := value.get(name)) is not None:
            check(field, f"{param}.{name}")


def _stream_options(value: Any, param: str) -> None:
    _object(value, param)
    _optional(value, param, include_usage=_boolean, include_obfuscation=_boolean)


def _metadata(value: Any, param: str) -> None:
    _object(value, param)
    for key, text in value.items():
        if not isinstance(text, str):
            fail(f"{param}.{key}", f"must be a string; got {kind_of(text)}.")


def _logit_bias(value: Any, param: str) -> None:
    _object(value, param)
    for token, bias in value.items():
        if not (token.isascii() and token.isdigit()):
            fail(param, f"must map token ids (digits) to biases; got key {shown(token)}.")
        if isinstance(bias, bool) or not isinstance(bias, int | float) \
                or not -100 <= bias <= 100:
            fail(f"{param}.{token}", f"must be a number between -100 and 100; got {shown(bias)}.")


# ---------------------------------------------------------------- structured options


def _text_parts(value: Any, param: str) -> None:
    """A string, or an array of text parts."""
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        fail(param, f"must be a string or an array of text parts; got {kind_of(value)}.")
    for j, part in enumerate(value):
        if not isinstance(part, dict) or part.get("type") != "text":
            fail(f"{param}[{j}]", "must be {type: 'text', text}.")
        _string(part.get("text"), f"{param}[{j}].text")


def _prediction(value: Any, param: str) -> None:
    _object(value, param)
    if value.get("type") != "content":
        fail(f"{param}.type", "must be 'content'.")
    _text_parts(value.get("content"), f"{param}.content")


def _response_format(value: Any, param: str) -> None:
    _object(value, param)
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in _FORMATS:
        fail(f"{param}.type", f"must be one of {', '.join(_FORMATS)}; got {shown(kind)}.")
    if kind != "json_schema":
        return
    spec = value.get("json_schema")
    at = f"{param}.json_schema"
    _object(spec, at)
    _string(spec.get("name"), f"{at}.name")
    _optional(spec, at, description=_string, schema=_object, strict=_boolean)


def _function(value: Any, param: str) -> None:
    """A function's declaration: {name, description?, parameters?, strict?}."""
    _object(value, param)
    name = value.get("name")
    if not isinstance(name, str) or not name:
        fail(f"{param}.name", "is required and must be a non-empty string.")
    _optional(value, param, description=_string, parameters=_object, strict=_boolean)


def _named(value: Any, param: str) -> None:
    """{name: a non-empty string, ...}."""
    _object(value, param)
    name = value.get("name")
    if not isinstance(name, str) or not name:
        fail(f"{param}.name", "is required and must be a non-empty string.")


def _tools(value: Any, param: str) -> None:
    if not isinstance(value, list):
        fail(param, f"must be an array of tools; got {kind_of(value)}.")
    for i, tool in enumerate(value):
        at = f"{param}[{i}]"
        _object(tool, at)
        kind = tool.get("type")
        if kind == "function":
            _function(tool.get("function"), f"{at}.function")
        elif kind == "custom":
            _named(tool.get("custom"), f"{at}.custom")
        else:
            fail(f"{at}.type", f"must be 'function' or 'custom'; got {shown(kind)}.")


def _tool_choice(value: Any, param: str) -> None:
    if isinstance(value, str):
        if value not in _TOOL_CHOICES:
            fail(param, f"must be 'none', 'auto', 'required' or an object; got {shown(value)}.")
        return
    _object(value, param)
    kind = value.get("type")
    if kind in ("function", "custom"):
        _named(value.get(kind), f"{param}.{kind}")
    elif kind == "allowed_tools":
        allowed = value.get("allowed_tools")
        at = f"{param}.allowed_tools"
        _object(allowed, at)
        if allowed.get("mode") not in ("auto", "required"):
            fail(f"{at}.mode", "must be 'auto' or 'required'.")
        tools = allowed.get("tools")
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            fail(f"{at}.tools", "must be an array of objects.")
    else:
        fail(f"{param}.type",
             f"must be 'function', 'custom' or 'allowed_tools'; got {shown(kind)}.")


def _functions(value: Any, param: str) -> None:
    if not isinstance(value, list):
        fail(param, f"must be an array of functions; got {kind_of(value)}.")
    for i, function in enumerate(value):
        _function(function, f"{param}[{i}]")


def _function_call(value: Any, param: str) -> None:
    if value in ("none", "auto"):
        return
    if isinstance(value, str):
        fail(param, f"must be 'none', 'auto' or {{name}}; got {shown(value)}.")
    _named(value, param)


# Each optional top-level field and its check; a field absent or null is not checked.
FIELDS: dict[str, Callable[[Any, str], None]] = {
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "presence_penalty": _number(-2, 2),
    "frequency_penalty": _number(-2, 2),
    "max_tokens": _integer(1, MAX_OUTPUT_TOKENS, f"an integer from 1 to {MAX_OUTPUT_TOKENS}"),
    "max_completion_tokens": _integer(1, MAX_OUTPUT_TOKENS,
                                      f"an integer from 1 to {MAX_OUTPUT_TOKENS}"),
    "n": _integer(1, MAX_CHOICES, f"an integer from 1 to {MAX_CHOICES}"),
    "seed": _integer(-_INT64, _INT64 - 1, "a signed 64-bit integer"),
    "top_logprobs": _integer(0, MAX_TOP_LOGPROBS, f"an integer from 0 to {MAX_TOP_LOGPROBS}"),
    "logprobs": _boolean,
    "stream": _boolean,
    "store": _boolean,
    "parallel_tool_calls": _boolean,
    "stream_options": _stream_options,
    "stop": _stop,
    "user": _string,
    "safety_identifier": _string,
    "prompt_cache_key": _string,
    "prompt_cache_retention": _string,
    "reasoning_effort": _string,
    "service_tier": _string,
    "verbosity": _string,
    "modalities": _strings,
    "metadata": _metadata,
    "logit_bias": _logit_bias,
    "audio": _object,
    "web_search_options": _object,
    "prediction": _prediction,
    "response_format": _response_format,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "functions": _functions,
    "function_call": _function_call,
}


def check_fields(body: dict[str, Any]) -> None:
    """Checks every optional field the body has; `model` and `messages` are the caller's."""
    for name, value in body.items():
        check = FIELDS.get(name)
        if check is not None and value is not None:
            check(value, name)
        if (type(value) is dict or type(value) is list) and name != "messages":
            check_depth(value, MAX_DEPTH - 1)  # the body is the first level
