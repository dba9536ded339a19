"""A gateway with a model of each provider kind behind it (fake upstreams on loopback) and the
echo model: for the tests that hold every door of the request's path to the same rules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import Gateway, started_gateway
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI

ECHO, OPENAI, ANTHROPIC, GEMINI = "tokenmux/echo", "gpt-fake", "claude-fake", "gemini-2.5-flash"
MODELS = (ECHO, OPENAI, ANTHROPIC, GEMINI)


@dataclass
class EveryKind:
    gateway: Gateway
    openai: FakeOpenAI
    anthropic: FakeAnthropic
    gemini: FakeGemini

    def upstream_requests(self) -> int:
        return len(self.openai.received) + len(self.anthropic.received) + len(
            self.gemini.received)


@contextmanager
def every_kind(directory: Path) -> Iterator[EveryKind]:
    openai, anthropic, gemini = FakeOpenAI().start(), FakeAnthropic().start(), FakeGemini().start()
    try:
        gateway = started_gateway(directory, f"""\
            routing: {{backoff_initial_ms: 10, breaker: {{failures: 1000000}}}}
            providers:
              fake: {{kind: openai, base_url: "{openai.base_url}", api_key: sk-fake}}
              claude: {{kind: anthropic, base_url: "{anthropic.base_url}",
                        api_key: {anthropic.api_key}}}
              google: {{kind: gemini, base_url: "{gemini.base_url}", api_key: {gemini.api_key}}}
            models:
              - {{name: {OPENAI}, channels: [{{provider: fake, model: upstream-model}}]}}
              - {{name: {ANTHROPIC}, channels: [{{provider: claude, model: claude-sonnet-4-5}}]}}
              - {{name: {GEMINI}, channels: [{{provider: google, model: {GEMINI}}}]}}
            """)
        try:
            yield EveryKind(gateway, openai, anthropic, gemini)
        finally:
            gateway.stop()
    finally:
        for fake in (openai, anthropic, gemini):
            fake.stop()


VIA_EACH_KIND = ("via-openai", "via-anthropic", "via-gemini")


@contextmanager
def via_each_kind(directory: Path, upstream: FakeOpenAI) -> Iterator[Gateway]:
    """A gateway with one model per provider kind, `via-openai` (on UPSTREAM), `via-anthropic`
    and `via-gemini` (on fakes of their own), each priced by its provider's table."""
    claude, gemini = FakeAnthropic().start(), FakeGemini().start()
    try:
        running = started_gateway(directory, f"""\
            providers:
              openai: {{kind: openai, base_url: "{upstream.base_url}", api_key: sk-openai,
                        price_provider: openai}}
              anthropic: {{kind: anthropic, base_url: "{claude.base_url}",
                           api_key: {claude.api_key}, price_provider: anthropic}}
              gemini: {{kind: gemini, base_url: "{gemini.base_url}", api_key: {gemini.api_key},
                        price_provider: google}}
            models:
              - {{name: via-openai, channels: [{{provider: openai, model: gpt-4.1-mini}}]}}
              - name: via-anthropic
                channels: [{{provider: anthropic, model: claude-sonnet-4-5}}]
              - {{name: via-gemini, channels: [{{provider: gemini, model: gemini-2.5-flash}}]}}
            """)
        try:
            yield running
        finally:
            running.stop()
    finally:
        claude.stop()
        gemini.stop()
