"""The client libraries people point at an OpenAI-compatible gateway, in their own idioms, on
every provider kind: LangChain's `ChatOpenAI` (a temperature on every call, `bind_tools(...,
parallel_tool_calls=False)`, `with_structured_output(..., method="function_calling")`) and
litellm's `completion`. Before the parameter policy each of these was a 400 on Claude or Gemini.
"""

from __future__ import annotations

import os

# litellm fetches its model price map at import unless told to use the one it ships.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import json
from collections.abc import Iterator

import litellm
import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.conftest import ADMIN_KEY, Gateway, started_gateway
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI
from tests.test_param_policy import TIME, WEATHER, Fakes, policy_config

# One model of each provider kind, and the fake that answers it.
KINDS = [("gpt-4.1", "openai"), ("gpt-5", "openai"), ("claude-sonnet-4-5", "claude"),
         ("gemini-2.5-flash", "gemini")]
MODELS = [model for model, _ in KINDS]


class Weather(BaseModel):
    """The weather asked about."""

    city: str


@tool
def get_weather(city: str) -> str:
    """Weather in a city."""
    return "sunny"


@tool
def get_time(city: str, format: str) -> str:
    """Time in a city."""
    return "14:00"


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    running = Fakes(FakeOpenAI().start(), FakeAnthropic().start(), FakeGemini().start())
    yield running
    for fake in (running.openai, running.claude, running.gemini):
        fake.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, fakes: Fakes) -> Iterator[Gateway]:
    running = started_gateway(tmp_path_factory.mktemp("clients"), policy_config(fakes))
    yield running
    running.stop()


def chat(gateway: Gateway, model: str) -> ChatOpenAI:
    return ChatOpenAI(model=model, base_url=gateway.base_url + "/v1", api_key=ADMIN_KEY,
                      temperature=0)


def sent(fakes: Fakes, model: str) -> dict[str, object]:
    fake = dict(KINDS)[model]
    body: dict[str, object] = getattr(fakes, fake).last().body
    return body


# ---------------------------------------------------------------- LangChain


@pytest.mark.parametrize("model", MODELS)
def test_langchain_with_a_temperature(gateway, fakes, model):
    answer = chat(gateway, model).invoke("Say hello")
    assert answer.content.startswith("Hello from the fake")
    assert answer.response_metadata["model_name"] == model
    body = sent(fakes, model)
    if model == "gpt-4.1":
        assert body["temperature"] == 0  # the model takes it: it goes through
    elif model == "gemini-2.5-flash":
        assert body["generationConfig"] == {"temperature": 0}
    else:
        assert "temperature" not in body


@pytest.mark.parametrize("model", MODELS)
def test_langchain_structured_output_by_function_calling(gateway, fakes, model):
    structured = chat(gateway, model).with_structured_output(Weather, method="function_calling")
    assert structured.invoke('@call Weather {"city": "Paris"}') == Weather(city="Paris")


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "gemini-2.5-flash"])
def test_langchain_bind_tools_without_parallel_calls_gets_one_call(gateway, fakes, model):
    bound = chat(gateway, model).bind_tools([get_weather, get_time], parallel_tool_calls=False)
    answer = bound.invoke("@calls2")
    assert [(c["name"], c["args"]) for c in answer.tool_calls] == [
        ("get_weather", {"city": "Paris"})]
    several = chat(gateway, model).bind_tools([get_weather, get_time]).invoke("@calls2")
    assert [c["name"] for c in several.tool_calls] == ["get_weather", "get_time"]


def test_langchain_bind_tools_without_parallel_calls_reaches_a_gpt(gateway, fakes):
    bound = chat(gateway, "gpt-4.1").bind_tools([get_weather], parallel_tool_calls=False)
    answer = bound.invoke('@call get_weather {"city": "Paris"}')
    assert [(c["name"], c["args"]) for c in answer.tool_calls] == [
        ("get_weather", {"city": "Paris"})]
    assert fakes.openai.last().body["parallel_tool_calls"] is False


def test_langchain_streams_with_a_temperature(gateway):
    text = "".join(str(c.content) for c in chat(gateway, "claude-sonnet-4-5").stream("Hi"))
    assert text.startswith("Hello from the fake Claude")


# ---------------------------------------------------------------- litellm


# Not gpt-5: litellm knows it, and refuses top_p for it itself before anything is sent.
@pytest.mark.parametrize("model", ["gpt-4.1", "claude-sonnet-4-5", "gemini-2.5-flash"])
def test_litellm_with_a_temperature(gateway, fakes, model):
    response = litellm.completion(model=f"openai/{model}", api_base=gateway.base_url + "/v1",
                                  api_key=ADMIN_KEY, temperature=0.2, top_p=0.9,
                                  messages=[{"role": "user", "content": "Say hello"}])
    assert response.choices[0].message.content.startswith("Hello from the fake")
    body = sent(fakes, model)
    if model == "gpt-4.1":
        assert (body["temperature"], body["top_p"]) == (0.2, 0.9)
    elif model == "gemini-2.5-flash":
        assert body["generationConfig"] == {"temperature": 0.2, "topP": 0.9}
    else:
        assert not {"temperature", "top_p"} & set(body)


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "gemini-2.5-flash"])
def test_litellm_tools_without_parallel_calls(gateway, model):
    response = litellm.completion(model=f"openai/{model}", api_base=gateway.base_url + "/v1",
                                  api_key=ADMIN_KEY, tools=[WEATHER, TIME],
                                  parallel_tool_calls=False, temperature=0,
                                  messages=[{"role": "user", "content": "@calls2"}])
    calls = response.choices[0].message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})]
