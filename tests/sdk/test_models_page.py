"""`models.list()` returns what the openai client returns, so code written for `openai` (which
reads `.data`, or iterates) runs unchanged on TokenMux, sync and async."""

from __future__ import annotations

import asyncio

import openai

from tests.conftest import ADMIN_KEY
from tokenmux import AsyncTokenMux, AuthenticationError, TokenMux


def test_the_sync_list_is_the_openai_clients_page(gateway):
    url = gateway.base_url + "/v1"
    theirs = openai.OpenAI(api_key=ADMIN_KEY, base_url=url).models.list()
    with TokenMux(api_key=ADMIN_KEY, base_url=url) as sdk:
        ours = sdk.models.list()
    assert type(ours) is type(theirs)
    assert type(ours.data[0]) is type(theirs.data[0])
    assert [m.id for m in ours.data] == [m.id for m in theirs.data]
    assert [m.id for m in ours] == [m.id for m in theirs]
    assert "fake-model" in [m.id for m in ours.data]


def test_the_async_list_awaits_to_the_same_page_and_iterates(gateway):
    url = gateway.base_url + "/v1"

    async def run():
        theirs_client = openai.AsyncOpenAI(api_key=ADMIN_KEY, base_url=url)
        async with AsyncTokenMux(api_key=ADMIN_KEY, base_url=url) as sdk:
            theirs, ours = await theirs_client.models.list(), await sdk.models.list()
            iterated = ([m.id async for m in theirs_client.models.list()],
                        [m.id async for m in sdk.models.list()])
            try:
                await AsyncTokenMux(api_key="tm-wrong", base_url=url).models.list()
            except AuthenticationError as exc:
                refused = exc.status_code
        await theirs_client.close()
        return theirs, ours, iterated, refused

    theirs, ours, (their_ids, our_ids), refused = asyncio.run(run())
    assert type(ours) is type(theirs)
    assert [m.id for m in ours.data] == [m.id for m in theirs.data]
    assert our_ids == their_ids and "fake-model" in our_ids
    assert refused == 401  # the SDK's own error class, as for every other call
