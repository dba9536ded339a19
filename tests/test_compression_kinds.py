"""Compression for targets of every provider kind, JSON and stream, and for a request that may
fall back to a model with a smaller context window."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.compression_help import Calls, Talk, compression
from tests.conftest import Gateway, started_gateway
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI


@pytest.fixture(scope="module")
def fake(module_upstream: FakeOpenAI) -> FakeOpenAI:
    return module_upstream


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenAI, claude: FakeAnthropic,
       gemini: FakeGemini) -> Iterator[Gateway]:
    running = started_gateway(tmp_path_factory.mktemp("kinds"), f"""\
        compression: {{model: summariser, cache_entries: 2}}
        providers:
          fake: {{kind: openai, base_url: "{fake.base_url}", api_key: sk-fake}}
          claude: {{kind: anthropic, base_url: "{claude.base_url}", api_key: {claude.api_key}}}
          google: {{kind: gemini, base_url: "{gemini.base_url}", api_key: {gemini.api_key}}}
        models:
          - {{name: summariser, channels: [{{provider: fake, model: summariser-up}}]}}
          - {{name: claude-target, channels: [{{provider: claude, model: claude-sonnet-4-5}}]}}
          - {{name: gemini-target, channels: [{{provider: google, model: gemini-2.5-flash}}]}}
          - {{name: narrow, channels: [{{provider: fake, model: narrow-up}}],
              context_window: 1200}}
          - name: wide
            channels: [{{provider: fake, model: wide-up}}]
            context_window: 1000000
            fallbacks: [narrow]
            compression: {{strategy: on}}  # bare: YAML reads it as true, the gateway as "on"
        """)
    yield running
    running.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("kind", ["claude", "gemini"])
def test_a_target_of_each_kind_gets_the_compressed_conversation(gw, fake, claude, gemini,
                                                               kind, stream):
    upstream = claude if kind == "claude" else gemini
    before = len(upstream.received)
    calls = Calls(fake)
    talk = Talk()
    messages = talk.turns(6).ask()
    raw = gw.client().chat.completions.with_raw_response.create(
        model=f"{kind}-target", messages=messages, stream=stream,
        extra_body={"compression": compression(threshold=300, keep_turns=2)})
    assert raw.headers["X-Compression-Applied"] == "true"
    answer = raw.parse()
    text = ("".join(c.choices[0].delta.content or "" for c in answer if c.choices) if stream
            else answer.choices[0].message.content)
    assert text
    assert len(calls.summaries()) == 1
    (sent,) = upstream.received[before:]
    # The summary rides in the provider's own system field; the old turns are gone.
    assert "SUMMARY " in str(sent.body)
    assert "compression" not in sent.body
    seen = str(sent.body)
    assert f"({talk.tag} 4)" not in seen  # the turns before the last two: summarised
    assert f"({talk.tag} 5)" in seen and f"({talk.tag} 12)" in seen  # the last one, verbatim


def test_a_threshold_left_to_the_strategy_follows_the_smallest_window_a_request_may_reach(
        gw, fake):
    # The wide model's window alone would wait for 8000 tokens; its fallback's holds 1200, so
    # `on` (the model's default, refined by a header) compresses from half of that.
    messages = Talk().turns(8).ask()
    calls = Calls(fake)
    response = gw.post({"model": "wide", "messages": messages},
                       headers={"X-Compression-Keep-Turns": "2"})
    assert response.status_code == 200, response.text
    assert response.headers["X-Compression-Applied"] == "true"
    assert int(response.headers["X-Compression-Original-Tokens"]) >= 600
    assert len(calls.summaries()) == 1


def test_the_summary_store_keeps_the_latest_summaries_up_to_its_bound(gw, fake):
    talks = [Talk().turns(6).ask() for _ in range(3)]

    def summarised(messages: list[dict]) -> int:
        calls = Calls(fake)
        response = gw.post({"model": "claude-target", "messages": messages,
                            "compression": compression(threshold=300, keep_turns=2)})
        assert response.headers["X-Compression-Applied"] == "true", response.headers
        return len(calls.summaries())

    assert [summarised(messages) for messages in talks] == [1, 1, 1]
    # Two are kept: the first is gone, and summarised anew; the last is still there.
    assert summarised(talks[0]) == 1
    assert summarised(talks[2]) == 0
