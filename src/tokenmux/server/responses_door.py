"""One request through the Responses door: its body read into the internal request, the
conversation it continues found, and the response it makes kept for the next turn.

The pipeline drives it (`read_body`, then `parse`) after the key is known, like any door's body;
the HTTP edge renders the answer and calls `keep`. Nothing here runs for a chat request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from tokenmux.api.chat import ChatRequest
from tokenmux.api.response_object import assistant_message
from tokenmux.api.response_store import ResponseStore
from tokenmux.api.responses import Previous, ResponsesRequest, chat_request, read_request
from tokenmux.auth import KeyCache
from tokenmux.errors import ResponseNotFound


class ResponsesDoor:
    def __init__(self, keys: KeyCache, store: ResponseStore, authorization: str | None,
                 api_key: str | None, read: Callable[[], Awaitable[bytes]]):
        self._keys, self._store = keys, store
        self._authorization, self._api_key = authorization, api_key
        self._read = read
        self.request: ResponsesRequest | None = None
        self._scope: str | None = None  # the key's id: responses are kept per key

    async def read_body(self) -> bytes:
        raw = await self._read()
        request = self.request = read_request(raw)
        previous = request.body.get("previous_response_id")
        if previous is None and not request.stored:
            return raw
        # Known by now, and cached: the pipeline authenticated the request before its body.
        self._scope = (await self._keys.authenticate(self._authorization, self._api_key)).key_id
        if previous is not None:
            record = await self._store.get(self._scope, previous)
            if record is None:
                raise ResponseNotFound(
                    f"Previous response with id '{previous}' not found: it was made with "
                    f"'store': false, by another key, or longer ago than the gateway keeps "
                    f"responses.", param="previous_response_id")
            request.previous = Previous(previous, orjson.loads(record)["messages"])
        return raw

    def parse(self, raw: bytes) -> ChatRequest:
        assert self.request is not None, "the body is read before it is parsed"
        return chat_request(self.request)

    async def keep(self, response: dict[str, Any]) -> None:
        request = self.request
        if request is None or not request.stored or self._scope is None:
            return
        messages = list(request.conversation)
        if (answer := assistant_message(response["output"])) is not None:
            messages.append(answer)
        record = orjson.dumps({"messages": messages, "response": response})
        await self._store.put(self._scope, response["id"], record)
