"""Validation of `POST /v1/embeddings` bodies, OpenAI's embeddings request.

`input` is a string, an array of strings, a token array (integers) or an array of token arrays;
the bounds are OpenAI's own (at most 2048 inputs, none empty, token arrays of at most 300,000
tokens in all), so that a request the upstream would refuse is refused here, before anything is
reserved or sent. `dimensions`, `encoding_format` (`float` or `base64`) and `user` are checked
for type; any other field passes through untouched to OpenAI-kind upstreams, as in chat. The body
is parsed once and the dict travels on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenmux.api.chat import read_request
from tokenmux.errors import InvalidRequest

MAX_INPUTS = 2048
MAX_ARRAY_TOKENS = 300_000  # the sum over every token array of one request
MAX_TOKEN_ID = 2**31 - 1
MAX_DIMENSIONS = 65_536
ENCODINGS = ("float", "base64")


@dataclass(slots=True)
class EmbeddingRequest:
    body: dict[str, Any]
    model: str
    texts: list[str] | None  # the inputs, when they are text
    token_arrays: list[list[int]] | None  # the inputs, when they are token arrays
    dimensions: int | None
    base64: bool  # `encoding_format: base64`: each vector as little-endian float32, base64
    user: str | None
    stream: bool = False  # an embedding is never streamed (the ledger row says so)

    @property
    def count(self) -> int:
        inputs = self.texts if self.texts is not None else self.token_arrays
        return len(inputs or ())


def parse_embeddings(raw: bytes) -> EmbeddingRequest:
    body, model = read_request(raw)
    texts, arrays = _inputs(body.get("input"))
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)
                                   or not 1 <= dimensions <= MAX_DIMENSIONS):
        raise InvalidRequest(f"'dimensions' must be a whole number from 1 to {MAX_DIMENSIONS}; "
                             f"got {dimensions!r}.", param="dimensions")
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ENCODINGS:
        raise InvalidRequest(f"'encoding_format' must be 'float' or 'base64'; got {encoding!r}.",
                             param="encoding_format")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'user' must be a string.", param="user")
    if body.get("stream"):
        raise InvalidRequest("Embeddings are not streamed; leave 'stream' out.", param="stream")
    return EmbeddingRequest(body, model, texts, arrays, dimensions, encoding == "base64", user)


def _inputs(value: Any) -> tuple[list[str] | None, list[list[int]] | None]:
    """(texts, None) or (None, token arrays), from the `input` field as sent."""
    if isinstance(value, str):
        return [_text(value, "input")], None
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'input' must be a non-empty string, an array of strings, an array "
                             "of token ids or an array of such arrays.", param="input")
    if len(value) > MAX_INPUTS and not _is_token(value[0]):
        raise InvalidRequest(f"'input' takes at most {MAX_INPUTS} inputs; got {len(value)}.",
                             param="input")
    first = value[0]
    if isinstance(first, str):
        return [_text(item, f"input[{i}]") for i, item in enumerate(value)], None
    if _is_token(first):
        return None, [_tokens(value, "input")]
    if isinstance(first, list):
        arrays = [_tokens(item, f"input[{i}]") for i, item in enumerate(value)]
        total = sum(map(len, arrays))
        if total > MAX_ARRAY_TOKENS:
            raise InvalidRequest(f"'input' holds {total} tokens; one request takes at most "
                                 f"{MAX_ARRAY_TOKENS}.", param="input")
        return None, arrays
    raise InvalidRequest("'input' must hold strings, token ids or arrays of token ids.",
                         param="input[0]")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"'{where}' must be a string, as the first input is.", param=where)
    if not value:
        raise InvalidRequest(f"'{where}' is empty; every input must have some text.", param=where)
    return value


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tokens(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"'{where}' must be a non-empty array of token ids.", param=where)
    if len(value) > MAX_ARRAY_TOKENS:
        raise InvalidRequest(f"'{where}' holds {len(value)} tokens; one request takes at most "
                             f"{MAX_ARRAY_TOKENS}.", param=where)
    for j, token in enumerate(value):
        if not _is_token(token) or not 0 <= token <= MAX_TOKEN_ID:
            raise InvalidRequest(f"'{where}[{j}]' must be a token id, a whole number from 0 to "
                                 f"{MAX_TOKEN_ID}; got {token!r}.", param=f"{where}[{j}]")
    return value
