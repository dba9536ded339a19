"""OpenTelemetry traces, sent over OTLP/HTTP when the config has an `otel:` section.

One span per request, made from its ledger row in the ledger writer's thread (as the metrics
are): it starts when the request arrived and ends when its row was made, and carries the GenAI
semantic conventions' attributes. The request path does nothing for it. This module is imported
only when `otel:` is configured, so a gateway without it loads nothing of OpenTelemetry.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from tokenmux.config.schema import Config
from tokenmux.ledger.row import door_of
from tokenmux.routing.catalog import ECHO_PROVIDER

# The GenAI conventions' names for the providers tokenmux speaks to (gen_ai.provider.name).
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}
_TOKENS = (("prompt_tokens", "gen_ai.usage.input_tokens"),
           ("completion_tokens", "gen_ai.usage.output_tokens"),
           ("cached_tokens", "gen_ai.usage.cache_read.input_tokens"),
           ("reasoning_tokens", "gen_ai.usage.reasoning.output_tokens"))


class Traces:
    def __init__(self, config: Config):
        otel = config.otel
        assert otel is not None
        self._provider = TracerProvider(resource=Resource.create({
            "service.name": otel.service_name}))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
            endpoint=otel.endpoint, headers=dict(otel.headers))))
        self._tracer = self._provider.get_tracer("tokenmux")
        self._kinds = {ECHO_PROVIDER: "tokenmux",
                       **{name: provider.kind for name, provider in config.providers.items()}}

    def observe(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            end = record["created_at"]
            start = end - timedelta(milliseconds=record["latency_ms"])
            operation = "embeddings" if record.get("door") == "embeddings" else "chat"
            requested = record["requested_model"]
            span = self._tracer.start_span(
                f"{operation} {requested}" if requested else operation, kind=SpanKind.SERVER,
                start_time=_ns(start), attributes=self._attributes(record, operation))
            if record["status"] >= 400:
                span.set_status(Status(StatusCode.ERROR, record["error_code"] or None))
            span.end(end_time=_ns(end))

    def _attributes(self, record: dict[str, Any], operation: str) -> dict[str, Any]:
        provider = record["provider"]
        kind = self._kinds.get(provider or "")
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "http.response.status_code": record["status"],
            "tokenmux.request_id": record["request_id"],
            "tokenmux.door": door_of(record),
            "tokenmux.tier": record["tier"],
            "tokenmux.attempts": record["attempts"],
            "tokenmux.stream": record["stream"],
        }
        if kind is not None:
            attributes["gen_ai.provider.name"] = PROVIDER_NAMES.get(kind, kind)
            attributes["gen_ai.system"] = attributes["gen_ai.provider.name"]  # the older name
        optional = (("gen_ai.request.model", record["requested_model"]),
                    ("gen_ai.response.model", record["upstream_model"]),
                    ("tokenmux.model", record["model"]),
                    ("tokenmux.provider", provider),
                    ("error.type", record["error_code"] if record["status"] >= 400 else None),
                    ("tokenmux.ttft_ms", record["ttft_ms"]))
        for name, value in optional:
            if value is not None:
                attributes[name] = value
        for column, name in _TOKENS:
            attributes[name] = record[column]
        if (cost := record.get("cost_usd")) is not None:
            attributes["tokenmux.cost_usd"] = float(cost)
        return attributes

    def close(self) -> None:
        """Sends the spans still waiting (the ledger's last flush has made them)."""
        self._provider.shutdown()


def _ns(moment: Any) -> int:
    return int(moment.timestamp() * 1_000_000_000)
