"""Each SDK example in the README runs, as written, against a live gateway."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY

README = Path(__file__).resolve().parents[2] / "README.md"
_SECTION = re.compile(r"<!-- sdk-examples:start -->(.*?)<!-- sdk-examples:end -->", re.S)
EXAMPLES = re.findall(r"```python\n(.*?)```", _SECTION.search(README.read_text()).group(1), re.S)


def test_the_readme_has_every_kind_of_example():
    titles = [example.splitlines()[0] for example in EXAMPLES]
    assert titles == ["# Basic", "# Multi-turn", "# Configuration and the gateway's own options",
                      "# Streaming, with the final usage chunk",
                      "# Response fields and token usage", "# Error handling", "# Async"]


# What each example prints against the echo model, whole: a wrong answer, a missing field or
# the wrong branch of the error example fails its test.
PRINTS = {
    "Basic": r"Hello, gateway",
    "Multi-turn": r"Another one\.",
    "Configuration and the gateway's own options": r"tokenmux/echo stop",
    "Streaming, with the final usage chunk": r"Stream these words to me\ntokens: (\d+)",
    "Response fields and token usage":
        r"chatcmpl-[0-9a-f]+ tokenmux/echo stop\n(\d+) (\d+) (\d+)",
    "Error handling": r"unknown model: 404 model_not_found req_[A-Za-z0-9]+",
    "Async": r"Hello async\nStreaming async\n\[(?:'[^']+', )*'tokenmux/echo'(?:, '[^']+')*\]",
}


@pytest.mark.parametrize("code", EXAMPLES, ids=[e.splitlines()[0][2:] for e in EXAMPLES])
def test_readme_example_prints_what_it_says(gateway, code):
    env = {**gateway.env, "TOKENMUX_API_KEY": ADMIN_KEY,
           "TOKENMUX_BASE_URL": gateway.base_url + "/v1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    printed = re.fullmatch(PRINTS[code.splitlines()[0][2:]], result.stdout.strip())
    assert printed, result.stdout
    numbers = [int(n) for n in printed.groups()]
    if len(numbers) == 3:  # prompt + completion = total
        assert numbers[0] > 0 and numbers[1] > 0 and numbers[0] + numbers[1] == numbers[2]
    elif numbers:
        assert numbers[0] > 0
