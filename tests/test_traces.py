"""OpenTelemetry traces: with `otel:` configured, one span per request reaches a real OTLP/HTTP
receiver with the GenAI semantic conventions' attributes; without it, the gateway process never
imports what sends traces."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest

from tests.conftest import Gateway, config_for, wait_until
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.otlp_collector import FakeCollector

SERVER, ERROR = 2, 2  # OTLP's SpanKind.SERVER and StatusCode.ERROR
TRACING = ("opentelemetry.sdk.trace", "opentelemetry.exporter", "opentelemetry.proto",
           "google.protobuf", "tokenmux.telemetry.traces")


@pytest.fixture
def collector() -> Iterator[FakeCollector]:
    fake = FakeCollector().start()
    yield fake
    fake.stop()


def test_each_request_is_one_span_with_the_genai_attributes(
        tmp_path: Path, upstream: FakeOpenAI, collector: FakeCollector) -> None:
    gateway = Gateway(tmp_path, config_for(tmp_path, upstream, f"""\
otel:
  endpoint: {collector.endpoint}
  service_name: gateway-under-test
  headers: {{x-collector-token: token-123}}
""")).start()
    try:
        client = gateway.client()
        answer = client.chat.completions.with_raw_response.create(
            model="fake-alias", messages=[{"role": "user", "content": "@usage 300 20 100"}],
            user="someone")
        ok_id = answer.headers["X-Request-Id"]
        stream = client.chat.completions.with_raw_response.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}], stream=True)
        stream_id = stream.headers["X-Request-Id"]
        list(stream.parse())
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(model="dead-model",
                                           messages=[{"role": "user", "content": "hi"}])
        failed_id = failed.value.response.headers["X-Request-Id"]
        # The batch processor sends every few seconds: the spans come without a stop.
        assert wait_until(lambda: len(collector.spans) >= 3, timeout=40)
        rows = {row["request_id"]: row for row in gateway.rows()}
    finally:
        gateway.stop()
    spans = {span.attributes["tokenmux.request_id"]: span for span in collector.spans}
    assert set(spans) == {ok_id, stream_id, failed_id}
    assert collector.received[0].headers["x-collector-token"] == "token-123"

    ok = spans[ok_id]
    assert ok.resource["service.name"] == "gateway-under-test"
    assert ok.name == "chat fake-alias"
    assert ok.kind == SERVER
    assert ok.scope == "tokenmux"
    attributes = ok.attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.system"] == "openai"
    assert attributes["gen_ai.request.model"] == "fake-alias"
    assert attributes["gen_ai.response.model"] == "upstream-model-v1"
    assert attributes["gen_ai.usage.input_tokens"] == 300
    assert attributes["gen_ai.usage.output_tokens"] == 20
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 100
    assert attributes["http.response.status_code"] == 200
    assert attributes["tokenmux.model"] == "fake-model"
    assert attributes["tokenmux.door"] == "chat"
    assert attributes["tokenmux.attempts"] == 1
    assert attributes["tokenmux.cost_usd"] == pytest.approx(float(rows[ok_id]["cost_usd"]))
    assert "error.type" not in attributes
    # The span lasts as long as the ledger says the request did.
    assert (ok.end_ns - ok.start_ns) / 1e6 == pytest.approx(rows[ok_id]["latency_ms"], abs=0.01)
    # No key, no end user, no message text in any span.
    for span in spans.values():
        assert not {"someone", "hi", "@usage 300 20 100"} & {
            str(value) for value in span.attributes.values()}

    streamed = spans[stream_id].attributes
    assert streamed["tokenmux.stream"] is True
    assert streamed["gen_ai.usage.output_tokens"] == rows[stream_id]["completion_tokens"] > 0
    assert streamed["tokenmux.ttft_ms"] == pytest.approx(rows[stream_id]["ttft_ms"])

    dead = spans[failed_id]
    assert dead.status_code == ERROR
    assert dead.attributes["http.response.status_code"] == 502
    assert dead.attributes["error.type"] == rows[failed_id]["error_code"]
    assert dead.attributes["tokenmux.attempts"] == 3


def _imports_of_a_gateway(directory: Path, config: str, upstream: FakeOpenAI) -> str:
    """Serves a JSON answer and a stream, stops, and returns every import the process made
    (Python's own `-X importtime` record, in the order they happened)."""
    gateway = Gateway(directory, config)
    gateway.env["PYTHONPROFILEIMPORTTIME"] = "1"
    log = directory / "imports.log"
    with log.open("w") as out:
        gateway.process = subprocess.Popen(
            [sys.executable, "-m", "tokenmux", "serve", "--config", str(gateway.config),
             "--port", str(gateway.port)], cwd=directory, env=gateway.env, stdout=out,
            stderr=subprocess.STDOUT, text=True)
        assert wait_until(lambda: _live(gateway), timeout=60)
        client = gateway.client()
        assert client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}]).choices
        assert list(client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}], stream=True))
        assert wait_until(lambda: len(gateway.rows()) == 2)
        assert gateway.stop() == 0
    return log.read_text()


def _live(gateway: Gateway) -> bool:
    try:
        return httpx.get(gateway.base_url + "/health/live", timeout=1).status_code == 200
    except httpx.HTTPError:
        time.sleep(0.1)
        return False


def test_without_otel_nothing_that_sends_traces_is_ever_imported(
        tmp_path: Path, upstream: FakeOpenAI, collector: FakeCollector) -> None:
    (tmp_path / "off").mkdir()
    off = _imported(_imports_of_a_gateway(tmp_path / "off", config_for(tmp_path / "off",
                                                                       upstream), upstream))
    # The record is complete: the metrics and their library are in it.
    assert {"prometheus_client", "tokenmux.telemetry.metrics"} <= off
    # redis-py imports OpenTelemetry's metrics API and SDK for itself whenever they are
    # installed; what sends traces (the tracer SDK, the exporter, protobuf) never comes in.
    assert not any(name.startswith(TRACING) for name in off), sorted(
        name for name in off if name.startswith(TRACING))
    # The same gateway with `otel:` does import it: the check above can fail.
    (tmp_path / "on").mkdir()
    otel = f'otel: {{endpoint: "{collector.endpoint}"}}\n'
    on = _imported(_imports_of_a_gateway(tmp_path / "on",
                                         config_for(tmp_path / "on", upstream, otel), upstream))
    assert {"opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter",
            "tokenmux.telemetry.traces"} <= on


def _imported(log: str) -> set[str]:
    # Lines of `import time: <self> | <cumulative> | <indent><module>`.
    return {line.rsplit("|", 1)[1].strip() for line in log.splitlines()
            if line.startswith("import time:") and line.count("|") == 2}
