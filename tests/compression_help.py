"""What the compression tests share: a gateway with targets and fake compression models around
one fake upstream, conversations that grow turn by turn, and the calls each request caused."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import UPSTREAM_KEY, Gateway, started_gateway
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.server import Received


def compression_gateway(directory: Path, fake: FakeOpenAI, extra: str = "") -> Gateway:
    """EXTRA: more of the config (e.g. a Redis the summaries are shared in)."""
    fake.standing["summariser-broken"] = "@fail 500"
    fake.standing["summariser-slow"] = "@stall 60"

    def model(name: str, upstream: str, price: tuple[float, float] | None = (1.0, 2.0),
              more: str = "") -> str:
        priced = f", price: {{input: {price[0]}, output: {price[1]}}}" if price else ""
        return (f"  - {{name: {name}, channels: [{{provider: fake, model: {upstream}}}]"
                f"{priced}{more}}}\n")

    return started_gateway(directory, extra + f"""\
routing: {{breaker: {{failures: 1000000}}, backoff_initial_ms: 10, backoff_max_ms: 50}}
compression: {{model: summariser-cheap}}
providers:
  fake: {{kind: openai, base_url: "{fake.base_url}", api_key: "{UPSTREAM_KEY}"}}
models:
""" + model("target", "target-up")
        + model("dear-target", "dear-up", (30.0, 60.0))
        + model("unpriced-target", "unpriced-up", None)
        + model("small-window", "small-up", more=", context_window: 600")
        + model("defaulted", "defaulted-up",
                more=", compression: {strategy: aggressive, threshold: 300}")
        + model("summariser-cheap", "summariser-cheap", (0.1, 0.2))
        + model("summariser-dear", "summariser-dear", (50.0, 100.0))
        + model("summariser-broken", "summariser-broken", (0.1, 0.2))
        + model("summariser-slow", "summariser-slow", (0.1, 0.2)))


_FILLER = ["the", "quarterly", "plan", "covers", "budgets", "vendors", "hiring", "timelines",
           "risks", "and", "the", "open", "questions", "about", "the", "migration", "of", "the",
           "billing", "service", "to", "the", "new", "region"]


def _words(tag: str, i: int, n: int) -> str:
    return " ".join(f"{_FILLER[(i + k) % len(_FILLER)]}" for k in range(n)) + f" ({tag} {i})"


@dataclass
class Talk:
    """A conversation that grows a turn at a time: a system prompt, then user/assistant turns."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    words: int = 60
    messages: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.messages.append({"role": "system", "content": f"You are a planner ({self.tag})."})

    def turns(self, n: int) -> Talk:
        for _ in range(n):
            self.turn()
        return self

    def turn(self) -> Talk:
        i = sum(1 for m in self.messages if m["role"] == "user")
        self.messages.append({"role": "user", "content": "user says " + _words(self.tag, i,
                                                                                self.words)})
        self.messages.append({"role": "assistant", "content": "assistant says " + _words(
            self.tag, i + 7, self.words)})
        return self

    def ask(self, text: str = "what next?") -> list[dict[str, Any]]:
        """The conversation with a last user message: what a request sends."""
        return [*self.messages, {"role": "user", "content": f"{text} ({self.tag})"}]


class Calls:
    """The upstream requests made from now on, split into summariser and target calls."""

    def __init__(self, fake: FakeOpenAI):
        self.fake = fake
        self.start = len(fake.received)

    def all(self) -> list[Received]:
        return list(self.fake.received[self.start:])

    def summaries(self) -> list[Received]:
        return [r for r in self.all() if str(r.body.get("model")).startswith("summariser")]

    def targets(self) -> list[Received]:
        return [r for r in self.all() if not str(r.body.get("model")).startswith("summariser")]

    def target(self) -> dict[str, Any]:
        (only,) = self.targets()
        return only.body


def compression(**fields: Any) -> dict[str, Any]:
    return {"enabled": True, **fields}
