"""`tokenmux usage`: the ledger's recent rows and its totals."""

from __future__ import annotations

import click
import orjson

from tokenmux.cli.common import config_option, load, open_database
from tokenmux.ledger.report import plain, recent_rows, totals


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Rows and totals as one JSON document.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="How many recent rows to show.")
def usage(config_path: str | None, as_json: bool, limit: int) -> None:
    """Show recent requests and totals per key and per model."""
    engine = open_database(load(config_path))
    rows = recent_rows(engine, limit)
    by_key, by_model = totals(engine, "key"), totals(engine, "model")
    if as_json:
        document = {
            "rows": [{k: plain(v) for k, v in r.items()} for r in rows],
            "totals": {"by_key": [{k: plain(v) for k, v in r.items()} for r in by_key],
                       "by_model": [{k: plain(v) for k, v in r.items()} for r in by_model]},
        }
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{'TIME':<20} {'KEY':<14} {'MODEL':<22} {'STATUS':>6} {'IN':>7} {'OUT':>7} "
               f"{'COST $':>11} {'MS':>8}")
    for r in rows:
        cost = "-" if r["cost_usd"] is None else f"{r['cost_usd']:.6f}"
        model = r["model"] or r["requested_model"] or "-"
        if r["kind"]:  # a summariser's call, billed to its request's key
            model = f"+{model}"
        click.echo(f"{r['created_at']:%Y-%m-%d %H:%M:%S} {(r['key_name'] or '-')[:14]:<14} "
                   f"{model[:22]:<22} {r['status']:>6} "
                   f"{r['prompt_tokens']:>7} {r['completion_tokens']:>7} {cost:>11} "
                   f"{r['latency_ms']:>8.1f}")
    if any(r["kind"] for r in rows):
        click.echo("(+MODEL: a compression model's summary for the request above it)")
    for title, group, name in (("per key", by_key, "key"), ("per model", by_model, "model")):
        click.echo(f"\nTotals {title}:")
        for t in group:
            cost = "-" if t["cost_usd"] is None else f"{t['cost_usd']:.6f}"
            click.echo(f"  {t[name] or '-':<30} {t['requests']:>7} requests "
                       f"{t['prompt_tokens']:>9} in {t['completion_tokens']:>9} out  ${cost}")
            if t["compression_calls"] or t["tokens_saved"]:
                spent = t["compression_cost_usd"]
                spent_text = "-" if spent is None else f"{spent:.6f}"
                click.echo(f"  {'':<30} compression: {t['compression_calls']} summaries "
                           f"${spent_text}, {t['tokens_saved']} tokens saved")
