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


@pytest.mark.parametrize("code", EXAMPLES, ids=[e.splitlines()[0][2:] for e in EXAMPLES])
def test_readme_example_runs(gateway, code):
    env = {**gateway.env, "TOKENMUX_API_KEY": ADMIN_KEY,
           "TOKENMUX_BASE_URL": gateway.base_url + "/v1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "Traceback" not in result.stderr
