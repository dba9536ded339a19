"""The dashboard in a real browser (Debian's headless Chromium, driven by Playwright): log in,
the overview's charts drawn from requests this test made, usage filtered by key, a key made in
the console used through the openai SDK, given an expiry and its expiry cleared in the edit form,
then revoked and refused, and logging out.

Screenshots of each page are kept in tests/artifacts/console/ (ignored by git)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import ADMIN_KEY, Gateway, gateway_of_its_own, wait_until
from tests.fakes.openai_upstream import FakeOpenAI

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).parent / "artifacts" / "console"
WAIT_MS = 20_000  # a loaded 2-core machine may be slow to draw; nothing here waits on a timer


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory,
       module_upstream: FakeOpenAI) -> Iterator[Gateway]:
    yield from gateway_of_its_own(tmp_path_factory, module_upstream, "console")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def ready(page: Page, name: str) -> None:
    expect(page.locator(f'#page[data-ready="{name}"]')).to_be_visible(timeout=WAIT_MS)


def make_key(gw: Gateway, name: str) -> str:
    return gw.cli("keys", "create", "--name", name).stdout.strip().splitlines()[-1]


def ask(gw: Gateway, key: str, prompt: int, completion: int) -> None:
    content = f"@usage {prompt} {completion} 0"
    gw.client(key=key).chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": content}])


def test_nothing_but_the_login_page_without_a_session(gw):
    assert httpx.get(gw.base_url + "/ui", timeout=10).status_code == 303
    assert httpx.get(gw.base_url + "/ui", timeout=10).headers["location"] == "/ui/login"
    assert httpx.get(gw.base_url + "/ui/static/app.js", timeout=10).status_code == 401
    assert httpx.get(gw.base_url + "/ui/static/login.css", timeout=10).status_code == 200
    assert httpx.get(gw.base_url + "/ui/static/../api.py", timeout=10).status_code == 404
    # A client's key opens no session; nor does a page of another site, even with the admin key.
    client = make_key(gw, "client-at-login")
    refused = httpx.post(gw.base_url + "/ui/login", data={"key": client}, timeout=10)
    assert refused.status_code == 403 and "set-cookie" not in refused.headers
    cross = httpx.post(gw.base_url + "/ui/login", data={"key": ADMIN_KEY}, timeout=10,
                       headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403 and "set-cookie" not in cross.headers


def test_a_session_changes_nothing_without_its_csrf_token(gw):
    opened = httpx.post(gw.base_url + "/ui/login", data={"key": ADMIN_KEY}, timeout=10)
    assert opened.status_code == 303
    cookie = opened.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and ADMIN_KEY not in cookie
    jar = {"tokenmux_session": opened.cookies["tokenmux_session"]}
    assert httpx.get(gw.base_url + "/admin/v1/keys", cookies=jar, timeout=10).status_code == 200
    forged = httpx.post(gw.base_url + "/admin/v1/keys", cookies=jar, json={"name": "forged"},
                        timeout=10)
    assert forged.status_code == 403
    page = httpx.get(gw.base_url + "/ui", cookies=jar, timeout=10).text
    token = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    other_site = httpx.post(gw.base_url + "/admin/v1/keys", cookies=jar, json={"name": "x"},
                            headers={"X-CSRF-Token": token, "Origin": "https://evil.example"},
                            timeout=10)
    assert other_site.status_code == 403
    made = httpx.post(gw.base_url + "/admin/v1/keys", cookies=jar, json={"name": "by-session"},
                      headers={"X-CSRF-Token": token, "Origin": gw.base_url}, timeout=10)
    assert made.status_code == 201 and made.json()["name"] == "by-session"


def test_the_console_end_to_end(gw, browser):
    team_a, team_b = make_key(gw, "team-a"), make_key(gw, "team-b")
    for prompt, completion in ((1000, 500), (2000, 250), (3000, 125)):
        ask(gw, team_a, prompt, completion)
    ask(gw, team_b, 400, 40)
    with pytest.raises(openai.APIStatusError):
        gw.client(key=team_b).chat.completions.create(
            model="dead-model", messages=[{"role": "user", "content": "hello"}])
    assert wait_until(lambda: len(gw.rows(key_name="team-a")) == 3
                      and len(gw.rows(key_name="team-b")) == 2)
    rows = gw.rows()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(gw.base_url + "/ui")
    expect(page).to_have_url(gw.base_url + "/ui/login")
    page.fill("#key", "tm-wrong")
    page.click("button[type=submit]")
    expect(page.locator(".problem")).to_be_visible(timeout=WAIT_MS)
    page.fill("#key", ADMIN_KEY)
    page.click("button[type=submit]")
    expect(page).to_have_url(gw.base_url + "/ui", timeout=WAIT_MS)
    ready(page, "overview")

    # The overview: each chart's bars add up to what the requests made, and are drawn.
    def bars(chart: str) -> list[float]:
        return page.locator(f'figure[data-chart="{chart}"] rect.bar').evaluate_all(
            "bars => bars.map(b => Number(b.dataset.value))")

    assert sum(bars("Requests")) == 5
    assert sum(bars("Errors")) == 1
    assert sum(bars("Tokens")) == sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
    assert round(sum(bars("Cost (USD)")), 10) == float(sum(
        Decimal(str(r["cost_usd"] or 0)) for r in rows)) == 0.00823
    drawn = page.locator('figure[data-chart="Requests"] rect.bar').evaluate_all(
        "bars => bars.filter(b => b.getBBox().height > 0).length")
    assert drawn >= 1
    expect(page.locator(".tile", has_text="Requests")).to_contain_text("5")
    expect(page.locator(".tile", has_text="Error rate")).to_contain_text("20.0%")
    expect(page.locator("section", has_text="Top keys")).to_contain_text("team-a")
    expect(page.locator("section", has_text="Errors by type")).to_contain_text("bad_gateway")
    shot(page, "1-overview")
    page.select_option("#range", "30d")
    ready(page, "overview")
    assert len(bars("Requests")) >= 30 and sum(bars("Requests")) == 5

    # Usage, filtered by key: team-a's three rows only.
    page.click("text=Usage")
    ready(page, "usage")
    key_a = next(r["key_id"] for r in gw.rows(key_name="team-a"))
    page.select_option("select[name=key]", key_a)
    page.click("#usage-filters button[type=submit]")
    ready(page, "usage")
    expect(page.locator("#usage-table tbody tr")).to_have_count(3, timeout=WAIT_MS)
    expect(page.locator("#usage-table tbody")).not_to_contain_text("team-b")
    assert f"key={key_a}" in page.get_attribute("#csv", "href")
    shot(page, "2-usage")

    # A key made in the console: its secret once, then used through the SDK, then revoked.
    page.click("text=Keys")
    ready(page, "keys")
    page.fill("#create-key input[name=name]", "made-in-console")
    page.fill("#create-key input[name=rpm]", "100")
    page.click("#create-key button[type=submit]")
    secret = page.locator("#new-secret").inner_text(timeout=WAIT_MS)
    assert secret.startswith("tm-")
    expect(page.locator("#copy-secret")).to_be_visible()
    shot(page, "3-keys")
    answer = gw.client(key=secret).chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hello"}])
    assert answer.choices[0].message.content
    made = next(k for k in httpx.get(gw.base_url + "/admin/v1/keys", timeout=10, headers={
        "Authorization": f"Bearer {ADMIN_KEY}"}).json()["data"] if k["name"] == "made-in-console")
    assert made["rpm"] == 100

    # An expiry set in the edit form (UTC, as the list shows it), then cleared.
    def edit_expiry(value: str) -> dict[str, object]:
        page.click(f'button[data-edit="{made["id"]}"]')
        page.fill("#edit-key input[name=expires_at]", value)
        page.click("#edit-key button[type=submit]")
        expect(page.locator("#key-note")).to_contain_text("Saved", timeout=WAIT_MS)
        return httpx.get(gw.base_url + f"/admin/v1/keys/{made['id']}", timeout=10, headers={
            "Authorization": f"Bearer {ADMIN_KEY}"}).json()

    assert edit_expiry("2099-01-02T03:04")["expires_at"] == "2099-01-02T03:04:00+00:00"
    row = page.locator("tr", has=page.locator(f'button[data-edit="{made["id"]}"]'))
    expect(row).to_contain_text("2099-01-02 03:04:00")
    shot(page, "3-keys-expiry")
    # The form shows an expiry to the minute; saving another setting keeps it to the second.
    assert httpx.patch(gw.base_url + f"/admin/v1/keys/{made['id']}", timeout=10,
                       json={"expires_at": "2099-01-02T03:04:05Z"},
                       headers={"Authorization": f"Bearer {ADMIN_KEY}"}).status_code == 200
    page.reload()
    ready(page, "keys")
    page.click(f'button[data-edit="{made["id"]}"]')
    expect(page.locator("#edit-key input[name=expires_at]")).to_have_value("2099-01-02T03:04")
    page.fill("#edit-key input[name=rpm]", "200")
    page.click("#edit-key button[type=submit]")
    expect(page.locator("#key-note")).to_contain_text("Saved", timeout=WAIT_MS)
    kept = httpx.get(gw.base_url + f"/admin/v1/keys/{made['id']}", timeout=10, headers={
        "Authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert (kept["rpm"], kept["expires_at"]) == (200, "2099-01-02T03:04:05+00:00")
    assert edit_expiry("")["expires_at"] is None
    expect(page.locator("tr", has=page.locator(f'button[data-edit="{made["id"]}"]'))
           ).not_to_contain_text("2099")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click(f'button[data-revoke="{made["id"]}"]')
    expect(page.locator("#key-note")).to_contain_text("Revoked", timeout=WAIT_MS)
    expect(page.locator(f'button[data-revoke="{made["id"]}"]')).to_have_count(0)

    def refused() -> bool:
        try:
            gw.client(key=secret).chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": "hello"}])
        except openai.AuthenticationError:
            return True
        return False

    assert wait_until(refused, timeout=15)

    # Channels, and the request log's ledger row of one of the requests.
    page.click("text=Channels")
    ready(page, "channels")
    expect(page.locator("table")).to_contain_text("fake/upstream-model-v1")
    shot(page, "4-channels")
    request_id = gw.rows(key_name="team-b")[0]["request_id"]
    page.click("text=Request log")
    ready(page, "requests")
    page.fill("#find-request input", request_id)
    page.click("#find-request button")
    expect(page.locator("dl.row")).to_contain_text("team-b", timeout=WAIT_MS)
    expect(page.locator("dl.row")).not_to_contain_text(team_b)
    shot(page, "5-request")

    page.click("#logout")
    expect(page).to_have_url(gw.base_url + "/ui/login", timeout=WAIT_MS)
    page.goto(gw.base_url + "/ui")
    expect(page).to_have_url(gw.base_url + "/ui/login")
    assert page.context.cookies() == [] or all(
        c["name"] != "tokenmux_session" for c in page.context.cookies())
    page.close()
