"""Interim: the Applier with Xero's writes (xero.send_xero) and a service-aware Sequence link, until apply.py
dispatches Xero itself. Nothing here is specific beyond what apply.py lacks for a second accounting app."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import duckdb
import httpx
import orjson

from assets.warehouse import table_exists
from assets.writeback import outbox, xero
from assets.writeback.apply import Applier, ApplyResult, Clients, _Row, customer_request, record_item_mappings
from assets.writeback.outbox import Outcome
from assets.writeback.plan import QUICKBOOKS, dumps
from connectors.auth import TokenStore
from connectors.http import AppClient
from connectors.registry import Connection, Registry
from connectors.sequence import SequenceClient


class XeroApplier(Applier):
    def _wave(self, rows: list[_Row]) -> None:
        xero_rows = [r for r in rows if r.app == xero.XERO]
        if xero_rows:
            xero.send_xero(self, xero_rows)
        super()._wave([r for r in rows if r.app != xero.XERO])

    def _link(self, client: SequenceClient, row: _Row) -> Outcome:
        """As Applier._link, with "already linked" judged within the id's own service."""
        customer_id = row.payload["customerId"]
        wanted = row.payload["integrationIds"][0]
        current = client.get_customer(customer_id)
        ids = [{"service": i.get("service"), "id": i.get("id")} for i in current.get("integrationIds") or []
               if isinstance(i, dict)]
        ours = [i for i in ids if i["service"] == wanted["service"]]
        if any(i["id"] == wanted["id"] for i in ours):
            return Outcome(row.key, "confirmed", answer=dumps(current), app_id=wanted["id"])
        if ours:
            return Outcome(row.key, "failed", retriable=False,
                           error=f"integrationIds: customer {customer_id} is already linked to {wanted['service']} "
                                 f"record {ours[0]['id']}; unlink it first")
        body = customer_request(current)
        body["integrationIds"] = [*ids, {"service": wanted["service"], "id": wanted["id"]}]
        self._sent(row)
        return Outcome(row.key, "confirmed", answer=dumps(client.update_customer(customer_id, body)),
                       app_id=wanted["id"])

    def _describe(self, row: _Row) -> str:
        if row.app == xero.XERO:
            return xero.describe(row, self.clients.connection(row.tenant, row.app).base_url)
        return super()._describe(row)

    def _record_item_mappings(self) -> None:
        """QuickBooks' items into the tenant's settings (as Applier does, but only QuickBooks' own: a Xero ItemID
        is no QuickBooks item), Xero's into its connection's settings."""
        if self.registry_path is None or not Path(self.registry_path).exists():
            return
        created = self.con.execute(
            f"select tenant, sequence_id, app_id, payload from {outbox.OUTBOX_TABLE} where operation = 'create_item' "
            "and state = 'confirmed' and app_id is not null and app = 'quickbooks'").fetchall()
        if created:
            codes: dict[tuple[str, str], str] = {}
            if table_exists(self.con, "unified.accounts"):
                codes = {(t, i): c for t, i, c in self.con.execute(
                    "select tenant, id, code from unified.accounts where app = 'quickbooks'").fetchall()}
            items = {(t, p): i for t, p, i, _ in created}
            accounts = {(t, p): codes.get((t, (orjson.loads(b).get("IncomeAccountRef") or {}).get("value")))
                        for t, p, _, b in created}
            record_item_mappings(Path(self.registry_path), items, accounts)
        mine = xero.confirmed_items(self.con)
        if mine:
            xero.record_item_mappings(Path(self.registry_path), mine)


def apply(con: duckdb.DuckDBPyConnection, registry: Registry, token_store: TokenStore, *,
          tenants: Iterable[str] | None = None, keys: Iterable[str] | None = None, allow_writes: bool = False,
          echo: Callable[[str], None] = print, registry_path: Path | None = None,
          build: Callable[[Connection, httpx.BaseTransport], AppClient] | None = None) -> ApplyResult:
    clients = Clients(registry, token_store, build=build)
    try:
        return XeroApplier(con, clients, allow_writes=allow_writes, echo=echo, registry_path=registry_path).run(
            tenants=tenants, keys=keys)
    finally:
        clients.close()


__all__ = ["QUICKBOOKS", "XeroApplier", "apply"]
