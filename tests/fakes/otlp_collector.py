"""A fake OpenTelemetry collector on loopback: it takes OTLP/HTTP trace exports (`POST
/v1/traces`, protobuf) as a real collector does, decodes them with the `opentelemetry-proto`
types, and keeps every span with its resource and the request's headers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.fakes.server import LoopbackServer, Received

PROTOBUF = "application/x-protobuf"


@dataclass
class Span:
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int
    scope: str


@dataclass
class FakeCollector(LoopbackServer):
    host: str = "127.0.0.1"
    port: int = 0
    received: list[Received] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/v1/traces"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/traces", self._export)

    async def _export(self, request: web.Request) -> web.Response:
        if request.content_type != PROTOBUF:
            return web.Response(status=415, text=f"not {PROTOBUF}")
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        self.received.append(Received(request.path, CIMultiDict(request.headers), {}))
        for resource_spans in export.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(Span(span.name, span.kind, span.start_time_unix_nano,
                                           span.end_time_unix_nano, _attributes(span.attributes),
                                           resource, span.status.code, scope_spans.scope.name))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type=PROTOBUF)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    return None if which is None else getattr(value, which)
