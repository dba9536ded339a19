"""The admin API, `/admin/v1/…`: keys, usage, channels and the effective config.

Each handler checks the caller is an admin (admin/access.py), reads its parameters, and runs its
database work in a thread, so the event loop keeps serving requests meanwhile.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from tokenmux.admin import channels, config_view, usage
from tokenmux.admin.access import admin_of
from tokenmux.auth import options, records
from tokenmux.db.schema import usage as usage_table
from tokenmux.errors import InvalidRequest, RouteNotFound
from tokenmux.gateway import Gateway
from tokenmux.server.responses import json_response
from tokenmux.server.routes import GATEWAY, request_id

Handler = Callable[[web.Request, Gateway], Awaitable[web.StreamResponse]]
DEFAULT_PAGE = 100
FILTERS = ("from", "to", "key", "model", "provider", "user", "door", "status", "request_id")


def _admin(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def checked(request: web.Request) -> web.StreamResponse:
        gateway = request.app[GATEWAY]
        await admin_of(request, gateway)
        return await handler(request, gateway)

    return checked


def _answer(request: web.Request, body: Any, status: int = 200) -> web.Response:
    return json_response(body, request_id(request), status)


# Keys

def key_json(record: records.KeyRecord, spent: Any = None) -> dict[str, Any]:
    body = {"object": "api_key", **{k: usage.plain(v) for k, v in record.__dict__.items()}}
    body["fallback_models"] = list(record.fallback_models)
    body["spent_usd"] = usage.plain(spent)
    return body


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise InvalidRequest("The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return body


def _checked(gateway: Gateway, fields: dict[str, Any],
             base: options.KeyOptions | None = None) -> options.KeyOptions:
    try:
        given = options.parse({**(base.model_dump() if base else {}), **fields})
        kept = None if base is None else base.expires_at
        return options.check(gateway.config, given, kept_expiry=kept)
    except options.InvalidKeyOption as problem:
        raise InvalidRequest(problem.message, param=problem.field) from None


def _name(value: object) -> str:
    try:
        return options.check_name(value)
    except options.InvalidKeyOption as problem:
        raise InvalidRequest(problem.message, param="name") from None


async def create_key(request: web.Request, gateway: Gateway) -> web.Response:
    body = await _body(request)
    name = _name(body.pop("name", None))
    checked = _checked(gateway, body)
    secret, record = await asyncio.to_thread(records.create_key, gateway.engine, name, checked)
    # The secret exists only in this answer: the database keeps its hash.
    return _answer(request, {**key_json(record), "secret": secret}, 201)


async def list_keys(request: web.Request, gateway: Gateway) -> web.Response:
    revoked = request.query.get("include_revoked", "false").lower() in ("1", "true", "yes")

    def read() -> list[dict[str, Any]]:
        found = records.list_keys(gateway.engine, include_revoked=revoked)
        spent = records.spent_by_key(gateway.engine, found)
        return [key_json(r, spent.get(r.id)) for r in found]

    return _answer(request, {"object": "list", "data": await asyncio.to_thread(read)})


async def _record(gateway: Gateway, key_id: str) -> records.KeyRecord:
    record = await asyncio.to_thread(records.get_key, gateway.engine, key_id)
    if record is None:
        raise RouteNotFound(f"There is no key {key_id!r}.", param="id")
    return record


async def get_key(request: web.Request, gateway: Gateway) -> web.Response:
    record = await _record(gateway, request.match_info["id"])
    spent = await asyncio.to_thread(records.spent_by_key, gateway.engine, [record])
    return _answer(request, key_json(record, spent.get(record.id)))


async def update_key(request: web.Request, gateway: Gateway) -> web.Response:
    key_id = request.match_info["id"]
    body = await _body(request)
    record = await _record(gateway, key_id)
    if record.revoked_at is not None:
        raise InvalidRequest(f"The key {key_id!r} is revoked; it cannot change.", param="id")
    name = _name(body.pop("name")) if "name" in body else record.name
    if "budget_usd" in body and body["budget_usd"] is None:
        body.setdefault("budget_period", None)  # no budget, so no period either
    checked = _checked(gateway, body, records.options_of(record))
    changed = await asyncio.to_thread(records.update_key, gateway.engine, key_id, name, checked)
    if changed is None:
        raise RouteNotFound(f"There is no live key {key_id!r}.", param="id")
    return _answer(request, key_json(changed))


async def revoke_key(request: web.Request, gateway: Gateway) -> web.Response:
    key_id = request.match_info["id"]
    record = await _record(gateway, key_id)
    if record.revoked_at is None:
        await asyncio.to_thread(records.revoke_ids, gateway.engine, [key_id])
    return _answer(request, key_json(await _record(gateway, key_id)))


# Usage

def _time(request: web.Request, name: str) -> datetime | None:
    text = request.query.get(name)
    if not text:
        return None
    try:
        return options.utc_time(text)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be an ISO 8601 time, such as "
                             f"2026-12-01T00:00:00Z; got {text!r}.", param=name) from None


def filters_of(request: web.Request) -> usage.Filters:
    unknown = [name for name in request.query if name not in (
        *FILTERS, "limit", "cursor", "format", "group_by")]
    if unknown:
        raise InvalidRequest(f"Unknown query parameter {unknown[0]!r}; the filters are "
                             f"{', '.join(FILTERS)}.", param=unknown[0])
    status = request.query.get("status") or None
    if status is not None and status not in usage.STATUS_CLASSES and not (
            status.isdigit() and len(status) == 3):
        raise InvalidRequest("'status' must be a status such as 429, a class such as 5xx, ok "
                             "or error.", param="status")
    q = request.query
    start, end = _time(request, "from"), _time(request, "to")
    # A time stored without its zone (SQLite) compares as UTC text.
    if start is not None and end is not None and end <= start:
        raise InvalidRequest("'to' must be after 'from'.", param="to")
    return usage.Filters(start=start, end=end, key=q.get("key") or None,
                         model=q.get("model") or None, provider=q.get("provider") or None,
                         user=q.get("user") or None, door=q.get("door") or None, status=status,
                         request_id=q.get("request_id") or None)


def _limit(request: web.Request) -> int:
    text = request.query.get("limit", str(DEFAULT_PAGE))
    if not text.isdigit() or not 1 <= int(text) <= usage.MAX_PAGE:
        raise InvalidRequest(f"'limit' must be a whole number from 1 to {usage.MAX_PAGE}.",
                             param="limit")
    return int(text)


async def usage_rows(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    filters = filters_of(request)
    if request.query.get("format") == "csv":
        return await _csv(request, gateway, filters)
    limit, cursor = _limit(request), request.query.get("cursor") or None
    try:
        found, after = await asyncio.to_thread(usage.rows, gateway.engine, filters, limit,
                                               cursor)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="cursor") from None
    data = [{k: usage.plain(v) for k, v in row.items()} for row in found]
    return _answer(request, {"object": "list", "data": data, "next_cursor": after,
                             "has_more": after is not None})


async def _csv(request: web.Request, gateway: Gateway,
               filters: usage.Filters) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8", "X-Request-Id": request_id(request),
        "Content-Disposition": 'attachment; filename="tokenmux-usage.csv"'})
    await response.prepare(request)
    columns = [c.name for c in usage_table.columns]
    batches = usage.every_row(gateway.engine, filters)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(columns)
    while True:
        batch = await asyncio.to_thread(next, batches, None)
        if batch is not None:
            writer.writerows([[_cell(row[c]) for c in columns] for row in batch])
        await response.write(text.getvalue().encode())
        text.seek(0)
        text.truncate()
        if batch is None:
            break
    await response.write_eof()
    return response


def _cell(value: Any) -> Any:
    value = usage.plain(value)
    return "" if value is None else value


async def usage_summary(request: web.Request, gateway: Gateway) -> web.Response:
    filters = filters_of(request)
    group_by = [g for g in request.query.get("group_by", "").split(",") if g]
    problem = usage.check_group_by(group_by)
    if problem:
        raise InvalidRequest(problem, param="group_by")
    groups, totals = await asyncio.to_thread(usage.summary, gateway.engine, filters, group_by)
    return _answer(request, {
        "object": "usage.summary", "group_by": group_by,
        "data": [{k: usage.plain(v) for k, v in g.items()} for g in groups],
        "totals": {k: usage.plain(v) for k, v in totals.items()}})


# Channels and config

async def list_channels(request: web.Request, gateway: Gateway) -> web.Response:
    state = channels.live(gateway.catalog)
    figures = await asyncio.to_thread(channels.recent, gateway.engine)
    return _answer(request, {"object": "list", "instance": gateway.instance,
                             "data": channels.with_recent(state, figures)})


async def effective_config(request: web.Request, gateway: Gateway) -> web.Response:
    return _answer(request, config_view.effective(gateway.config, gateway.catalog))


def add_admin_routes(app: web.Application) -> None:
    router = app.router
    router.add_post("/admin/v1/keys", _admin(create_key))
    router.add_get("/admin/v1/keys", _admin(list_keys))
    router.add_get("/admin/v1/keys/{id}", _admin(get_key))
    router.add_patch("/admin/v1/keys/{id}", _admin(update_key))
    router.add_delete("/admin/v1/keys/{id}", _admin(revoke_key))
    router.add_get("/admin/v1/usage", _admin(usage_rows))
    router.add_get("/admin/v1/usage/summary", _admin(usage_summary))
    router.add_get("/admin/v1/channels", _admin(list_channels))
    router.add_get("/admin/v1/config", _admin(effective_config))
