"""The command line: starting with a config (good or bad), the first start, and key management."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ADMIN_KEY, Gateway, config_for


def serve_fails(tmp_path, config_text: str) -> str:
    running = Gateway(tmp_path, config_text)
    result = subprocess.run(
        [sys.executable, "-m", "tokenmux", "serve", "--config", str(running.config),
         "--port", str(running.port)], env=running.env, capture_output=True, text=True,
        timeout=30)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.mark.parametrize(("text", "expected"), [
    ("providers:\n  p: {kind: openai}\nmodels:\n  - name: m\n    channels: [{provider: q, "
     "model: x}]\n", "models[0].channels[0].provider: unknown provider 'q'"),
    ("providers:\n  p: {kind: smoke-signals}\n", "providers.p.kind"),
    ("models:\n  - name: m\n    channels: []\n", "models[0].channels"),
    ("server: {port: 99999}\n", "server.port"),
    ("databse: x.db\n", "databse: Extra inputs are not permitted"),
    ("models: [\n", "line 2"),
    ("providers:\n  p: {kind: openai}\nmodels:\n  - {name: a, channels: [{provider: p, model: x}]}"
     "\n  - {name: b, aliases: [a], channels: [{provider: p, model: y}]}\n",
     "name 'a' is already used by models[0]"),
])
def test_a_bad_config_stops_the_start_with_file_field_and_reason(tmp_path, text, expected):
    message = serve_fails(tmp_path, text)
    assert str(tmp_path / "tokenmux.yaml") in message
    assert expected in message


def test_env_references_are_resolved_and_keys_stay_secret(gateway, upstream):
    # The fake provider's key comes from ${FAKE_UPSTREAM_KEY}; the upstream saw its value.
    gateway.client().chat.completions.create(model="fake-model", messages=[
        {"role": "user", "content": "hi"}])
    assert upstream.last().headers["Authorization"].endswith("0123456789")


def test_keys_create_list_revoke(gateway):
    created = gateway.cli("keys", "create", "--name", "cli-team", "--rpm", "5", "--tpm", "900")
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("tm-") and len(secret) > 40
    listing = gateway.cli("keys", "list").stdout
    assert "cli-team" in listing and secret not in listing and secret[:10] in listing
    [stored] = gateway.sql("SELECT key_hash, rpm, tpm FROM api_keys WHERE name='cli-team'")
    assert secret not in stored["key_hash"] and len(stored["key_hash"]) == 64
    assert (stored["rpm"], stored["tpm"]) == (5, 900)
    gateway.cli("keys", "revoke", "cli-team")
    assert "cli-team" not in gateway.cli("keys", "list").stdout
    assert "revoked" in gateway.cli("keys", "list", "--all").stdout
    missing = gateway.cli("keys", "revoke", "cli-team", check=False)
    assert missing.returncode != 0 and "no live key" in missing.stderr


def test_first_start_without_config_prints_an_admin_key_once(tmp_path):
    first = Gateway(tmp_path, None).start()
    try:
        client_models = None
        first.stop()
        lines = [line for line in first.output.splitlines() if "TOKENMUX_ADMIN_KEY=" in line]
        assert len(lines) == 1
        admin = lines[0].split("=", 1)[1].strip()
        again = Gateway(tmp_path, None).start()
        try:
            client_models = [m.id for m in again.client(key=admin).models.list()]
            reply = again.client(key=admin).chat.completions.create(
                model="tokenmux/echo", messages=[{"role": "user", "content": "works"}])
            assert again.post({"model": "tokenmux/echo", "messages": [
                {"role": "user", "content": "x"}]}, key=None).status_code == 401
        finally:
            again.stop()
        assert "TOKENMUX_ADMIN_KEY=" not in again.output
    finally:
        if first.process and first.process.poll() is None:
            first.stop()
    assert client_models == ["tokenmux/echo"]
    assert reply.choices[0].message.content == "works"
    assert (tmp_path / "tokenmux.db").exists()


def test_without_config_a_provider_key_in_the_environment_adds_its_models(tmp_path, upstream):
    running = Gateway(tmp_path, None)
    running.env.update(OPENAI_API_KEY="sk-from-env", OPENAI_BASE_URL=upstream.base_url,
                       TOKENMUX_ADMIN_KEY=ADMIN_KEY)
    running.start()
    try:
        models = [m.id for m in running.client().models.list()]
        assert "gpt-4.1-mini" in models and "deepseek-chat" not in models
        running.client().chat.completions.create(
            model="gpt-4.1-mini@2025-04-14", messages=[{"role": "user", "content": "hi"}])
        assert upstream.last().headers["Authorization"] == "Bearer sk-from-env"
        # The shipped catalog pins the dated snapshot that its facts and prices describe.
        assert upstream.last().body["model"] == "gpt-4.1-mini-2025-04-14"
    finally:
        running.stop()
    assert "TOKENMUX_ADMIN_KEY=" not in running.output


def test_admin_key_from_config_authenticates(tmp_path, upstream):
    running = Gateway(tmp_path, config_for(tmp_path, upstream)).start()
    try:
        assert running.client().models.list().data
    finally:
        running.stop()
    assert "TOKENMUX_ADMIN_KEY=" not in running.output
