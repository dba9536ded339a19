"""`POST /v1/embeddings` through the official `openai` SDK: an OpenAI-kind channel (the request
goes as it came) and a Gemini one (`batchEmbedContents`, base64 made by the gateway), both fakes
validating what they receive with their provider's SDK types; the ledger, limits, deadline and
the refusals of what a model or a channel cannot do."""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Iterator
from decimal import Decimal

import httpx2 as httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, Gateway, started_gateway, wait_until
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.embeddings import DEFAULT_DIMENSIONS, vector
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI
from tests.test_ratelimit_headers import new_key
from tokenmux import tokens
from tokenmux.config.schema import Config

TEXTS = ["The quick brown fox", "jumps over the lazy dog"]
KINDS = ["house-embed", "gemini-embedding-001"]  # an OpenAI-kind channel, a Gemini one


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI, gemini: FakeGemini,
            claude: FakeAnthropic) -> Iterator[Gateway]:
    running = started_gateway(tmp_path_factory.mktemp("embeddings"), f"""\
        routing: {{backoff_initial_ms: 10, breaker: {{failures: 1000000}}}}
        providers:
          fake: {{kind: openai, base_url: "{upstream.base_url}", api_key: {UPSTREAM_KEY}}}
          priced: {{kind: openai, base_url: "{upstream.base_url}", api_key: {UPSTREAM_KEY},
                    price_provider: openai}}
          dead: {{kind: openai, base_url: "http://127.0.0.1:9/v1", api_key: sk-dead}}
          google: {{kind: gemini, base_url: "{gemini.base_url}", api_key: {gemini.api_key},
                    price_provider: google}}
          claude: {{kind: anthropic, base_url: "{claude.base_url}", api_key: sk-ant}}
        models:
          - name: house-embed
            mode: embedding
            dimensions: {DEFAULT_DIMENSIONS}
            channels: [{{provider: fake, model: house-embed-v1}}]
            price: {{input: 0.5, output: 0}}
          - name: text-embedding-3-small
            mode: embedding
            channels: [{{provider: priced, model: text-embedding-3-small}}]
          - name: gemini-embedding-001
            mode: embedding
            channels: [{{provider: google, model: gemini-embedding-001}}]
          - name: failover-embed
            mode: embedding
            channels:
              - {{provider: dead, model: nothing, priority: 0}}
              - {{provider: fake, model: house-embed-v2, priority: 1}}
          - name: chat-model
            channels: [{{provider: fake, model: upstream-chat}}]
          - name: claude-model
            channels: [{{provider: claude, model: claude-sonnet-4-5}}]
        """)
    yield running
    running.stop()


@pytest.fixture
def client(gateway: Gateway) -> openai.OpenAI:
    return gateway.client()


def post(gateway: Gateway, body: object, key: str = ADMIN_KEY,
         headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(gateway.base_url + "/v1/embeddings", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}", **(headers or {})})


def floats(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


@pytest.mark.parametrize("model", KINDS)
def test_the_sdks_default_path_gets_each_inputs_vector(client, model):
    # The SDK asks for base64 on the wire and decodes it into floats itself.
    answer = client.embeddings.create(model=model, input=TEXTS)
    assert answer.model == model
    assert [d.index for d in answer.data] == [0, 1]
    assert [d.embedding for d in answer.data] == [vector(t) for t in TEXTS]
    assert answer.usage.prompt_tokens == answer.usage.total_tokens > 0


@pytest.mark.parametrize("model", KINDS)
def test_floats_and_base64_asked_for_explicitly(client, model):
    as_floats = client.embeddings.create(model=model, input="Hello there",
                                         encoding_format="float")
    assert as_floats.data[0].embedding == vector("Hello there")
    raw = client.embeddings.with_raw_response.create(model=model, input="Hello there",
                                                     encoding_format="base64")
    body = raw.http_response.json()
    assert body["object"] == "list"
    [item] = body["data"]
    assert (item["object"], item["index"]) == ("embedding", 0)
    assert isinstance(item["embedding"], str)
    assert floats(item["embedding"]) == vector("Hello there")


@pytest.mark.parametrize("model", KINDS)
def test_dimensions_shape_the_vectors(client, model):
    answer = client.embeddings.create(model=model, input=TEXTS, dimensions=3)
    assert [d.embedding for d in answer.data] == [vector(t, 3) for t in TEXTS]


def test_what_goes_to_an_openai_kind_channel_is_the_request_as_sent(client, upstream):
    client.embeddings.create(model="house-embed", input=TEXTS, dimensions=4, user="alice",
                             encoding_format="float")
    sent = upstream.last()
    assert sent.path == "/v1/embeddings"
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent.body == {"model": "house-embed-v1", "input": TEXTS, "dimensions": 4,
                         "user": "alice", "encoding_format": "float"}


def test_what_goes_to_gemini_is_a_batch_of_one_request_per_input(client, gemini):
    client.embeddings.create(model="gemini-embedding-001", input=TEXTS, dimensions=5)
    sent = gemini.last()
    assert sent.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert sent.body == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": text}]},
         "outputDimensionality": 5} for text in TEXTS]}
    assert not gemini.rejected


def test_token_arrays_go_to_an_openai_kind_channel(client, upstream):
    one = client.embeddings.create(model="house-embed", input=[1, 2, 3],
                                   encoding_format="float")
    assert one.data[0].embedding == vector(str([1, 2, 3]))
    assert one.usage.prompt_tokens == 3
    many = client.embeddings.create(model="house-embed", input=[[5, 6], [7]])
    assert [d.embedding for d in many.data] == [vector("[5, 6]"), vector("[7]")]
    assert upstream.last().body["input"] == [[5, 6], [7]]


def test_token_arrays_cannot_go_to_gemini(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="gemini-embedding-001", input=[[1, 2]])
    assert refused.value.param == "input"
    assert "text only" in refused.value.message


def test_the_ledger_bills_the_input_at_the_config_price(gateway, client):
    raw = client.embeddings.with_raw_response.create(model="house-embed", input=TEXTS,
                                                     user="bob")
    answer = raw.parse()
    row = gateway.wait_row(raw.headers["x-request-id"])
    assert (row["door"], row["model"], row["upstream_model"]) == (
        "embeddings", "house-embed", "house-embed-v1")
    assert (row["status"], row["stream"], row["end_user"]) == (200, 0, "bob")
    # The fake counts words: 4 and 5.
    assert (row["prompt_tokens"], row["completion_tokens"]) == (9, 0)
    assert answer.usage.prompt_tokens == 9
    assert Decimal(str(row["cost_usd"])) == Decimal("0.5") * 9 / 10**6


def test_the_ledger_bills_at_the_price_librarys_input_price(gateway, client):
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small",
                                                     input=[[1, 2, 3, 4, 5]])
    row = gateway.wait_row(raw.headers["x-request-id"])
    # genai-prices: $0.02 per million input tokens for text-embedding-3-small.
    assert Decimal(str(row["cost_usd"])) == Decimal("0.02") * 5 / 10**6


def test_a_gemini_answer_without_usage_is_counted_and_billed(gateway, client):
    raw = client.embeddings.with_raw_response.create(model="gemini-embedding-001", input=TEXTS)
    counted = sum(map(tokens.count_text, TEXTS))
    assert raw.parse().usage.prompt_tokens == counted
    row = gateway.wait_row(raw.headers["x-request-id"])
    assert (row["prompt_tokens"], row["usage_source"], row["door"]) == (
        counted, "counted", "embeddings")
    # genai-prices: $0.15 per million input tokens for gemini-embedding-001.
    assert Decimal(str(row["cost_usd"])) == Decimal("0.15") * counted / 10**6


def test_a_failed_channel_fails_over_to_the_next(gateway, client):
    raw = client.embeddings.with_raw_response.create(model="failover-embed", input="Hi")
    assert raw.headers["x-tokenmux-channel"] == "fake/house-embed-v2"
    assert raw.headers["x-tokenmux-attempts"] == "2"
    assert raw.parse().data[0].embedding == vector("Hi")


@pytest.mark.parametrize("model", KINDS)
def test_an_upstream_refusal_is_passed_on(client, model):
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=model, input="@fail 400")


def test_the_models_list_says_which_models_embed(client):
    models = {m.id: m.to_dict() for m in client.models.list()}
    assert (models["house-embed"]["mode"], models["house-embed"]["dimensions"]) == (
        "embedding", DEFAULT_DIMENSIONS)
    assert models["house-embed"]["pricing"] == {"input": 0.5, "output": 0.0,
                                                "cached_input": None}
    assert models["text-embedding-3-small"]["pricing"]["input"] == 0.02
    assert models["chat-model"]["mode"] == "chat"
    assert "dimensions" not in models["chat-model"]


def test_a_chat_model_makes_no_embeddings(gateway, client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="chat-model", input="Hello")
    assert (refused.value.code, refused.value.param) == ("model_not_embedding", "model")
    with pytest.raises(openai.BadRequestError) as anthropic:
        client.embeddings.create(model="claude-model", input="Hello")
    assert "anthropic's, whose API has no embeddings" in anthropic.value.message
    rid = anthropic.value.response.headers["x-request-id"]
    assert (gateway.wait_row(rid)["status"], gateway.wait_row(rid)["door"]) == (
        400, "embeddings")


def test_an_embedding_model_answers_no_chat(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="house-embed",
                                       messages=[{"role": "user", "content": "Hi"}])
    assert refused.value.code == "model_not_chat"


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "house-embed"}, "input"),
    ({"model": "house-embed", "input": ""}, "input"),
    ({"model": "house-embed", "input": []}, "input"),
    ({"model": "house-embed", "input": ["ok", ""]}, "input[1]"),
    ({"model": "house-embed", "input": ["ok", 3]}, "input[1]"),
    ({"model": "house-embed", "input": [[1], []]}, "input[1]"),
    ({"model": "house-embed", "input": [1, -2]}, "input[1]"),
    ({"model": "house-embed", "input": [True]}, "input[0]"),
    ({"model": "house-embed", "input": ["x"] * 2049}, "input"),
    ({"model": "house-embed", "input": [[1] * 100_000] * 4}, "input"),
    ({"model": "house-embed", "input": "x", "dimensions": 0}, "dimensions"),
    ({"model": "house-embed", "input": "x", "dimensions": "8"}, "dimensions"),
    ({"model": "house-embed", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"model": "house-embed", "input": "x", "user": 7}, "user"),
    ({"model": "house-embed", "input": "x", "stream": True}, "stream"),
    ({"input": "x"}, "model"),
])
def test_bad_input_is_a_clear_400(gateway, body, param):
    response = post(gateway, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)


def test_a_body_that_is_not_json_is_a_400(gateway):
    response = httpx.post(gateway.base_url + "/v1/embeddings", content=b"{nope",
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 400


def test_a_field_gemini_has_no_equivalent_of_is_refused_there(gateway):
    response = post(gateway, {"model": "gemini-embedding-001", "input": "x", "task": "q"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "task"


def test_an_unknown_model_is_a_404_and_a_bad_key_a_401(gateway):
    assert post(gateway, {"model": "nope", "input": "x"}).status_code == 404
    assert post(gateway, {"model": "house-embed", "input": "x"}, key="tm-wrong").status_code \
        == 401


def test_the_keys_rpm_limit_counts_embeddings(gateway):
    key = new_key(gateway, "embed-rpm", "--rpm", "2")
    client = gateway.client(key)
    for _ in range(2):
        client.embeddings.create(model="house-embed", input="Hi")
    with pytest.raises(openai.RateLimitError) as refused:
        client.embeddings.create(model="house-embed", input="Hi")
    assert int(refused.value.response.headers["retry-after"]) >= 1


def test_the_keys_tpm_limit_counts_the_input_tokens(gateway):
    # 60 a minute: one token a second comes back, so the figures below move little meanwhile.
    key = new_key(gateway, "embed-tpm", "--tpm", "60")
    client = gateway.client(key)
    heads = [client.embeddings.with_raw_response.create(model="house-embed",
                                                        input="one two three").headers
             for _ in range(2)]
    first, second = (int(h["x-ratelimit-remaining-tokens"]) for h in heads)
    # Each admission reserves an estimate from the body's size; the first settled to the three
    # tokens it read, so the second sees only those gone (not the first one's estimate).
    assert first < 60 - 3
    assert second >= first - 3
    with pytest.raises(openai.RateLimitError) as refused:
        client.embeddings.create(model="house-embed", input=["many words " * 200])
    row = gateway.wait_row(refused.value.response.headers["x-request-id"])
    assert (row["status"], row["door"], row["prompt_tokens"]) == (429, "embeddings", 0)


def test_x_timeout_ends_a_slow_embedding_with_a_408(gateway, upstream):
    response = post(gateway, {"model": "house-embed", "input": "@stall 60"},
                    headers={"X-Timeout": "5000"})
    assert response.status_code == 408
    assert response.json()["error"]["code"] == "request_timeout"
    row = gateway.wait_row(response.headers["x-request-id"])
    assert (row["status"], row["door"]) == (408, "embeddings")


def test_a_keyed_embedding_runs_once_and_its_retry_is_answered_from_it(gateway, upstream):
    body = {"model": "house-embed", "input": ["keyed once"], "encoding_format": "float"}
    sent = len(upstream.received)
    first, again = (post(gateway, body, headers={"Idempotency-Key": "embed-key-1"})
                    for _ in range(2))
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert len(upstream.received) == sent + 1
    assert wait_until(lambda: len(gateway.rows(request_id="embed-key-1")) == 2)
    billed, replay = sorted(gateway.rows(request_id="embed-key-1"),
                            key=lambda row: row["replay_of"] is not None)
    assert (billed["door"], billed["prompt_tokens"], replay["replay_of"]) == (
        "embeddings", 2, billed["id"])


@pytest.mark.parametrize(("model", "problem"), [
    ({"name": "e", "mode": "embedding", "channels": [{"provider": "a", "model": "m"}]},
     "models[0].channels[0].provider: 'a' is of kind 'anthropic', whose API has no embeddings"),
    ({"name": "e", "mode": "embedding", "channels": [{"provider": "o", "model": "m"}],
      "fallbacks": ["chat"]},
     "models[0].fallbacks[0]: 'chat' is not of mode 'embedding', as models[0] is"),
])
def test_the_config_refuses_what_an_embedding_model_cannot_have(model, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        Config.model_validate({
            "providers": {"a": {"kind": "anthropic"}, "o": {"kind": "openai"}},
            "models": [model, {"name": "chat", "channels": [{"provider": "o", "model": "c"}]}]})
