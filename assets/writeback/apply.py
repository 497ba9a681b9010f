"""Sends the outbox's pending writes, per tenant and app, in dependency waves, exactly once. Each app's writes go
through its writer's `send` (writers.py: QuickBooks' below, Xero's in xero.py, the CRMs' in crm.py, Sequence's
below); the dry-run lines and the item mappings are the writers' too.

- QuickBooks: every write carries `requestid` = its idempotency key (a batch: an id derived from its members'
  keys, ≤ 36 characters, bIds ≤ 10), recorded before the call, so a resend after a crash or a lost answer goes
  under the same requestid and is replayed, not re-executed. Only a write QuickBooks refused outright (a
  validation fault, a stale SyncToken: nothing was written) goes again as a new request, `<key>-<attempt>`.
  Independent writes of a wave go through the batch endpoint, 30 per call (the client paces each item against
  the per-minute limit, and the calls against the batch endpoint's own 40/min). A stale SyncToken (5010) makes apply read the record again: if the change is already
  there the write is skipped, otherwise it is sent once more with the fresh SyncToken.
- Sequence has no idempotency key: an import looks the customer up by its alias `qb-<id>` before creating it,
  a link reads the customer's integration ids before writing them, and a payment status is checked before it is
  set again after an unclear outcome.
- Every row is marked `sent` (committed) before its request and recorded right after it (outbox.py).
- 429s, 5xx and expired tokens are the connector layer's business (connectors/http.py, connectors/auth.py);
  what is still failing when its retries run out is marked `failed` (retriable) and apply goes on.
- Dry run is the default outside the sandbox: a connection is written to only when it is loopback or writes are
  allowed explicitly; otherwise apply prints what it would send.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import yaml

from assets.warehouse import table_exists
from assets.writeback import outbox, writers
from assets.writeback.outbox import Outcome
from assets.writeback.plan import QUICKBOOKS, dumps, ref_target
from assets.writeback.quickbooks import QBO_ENTITIES
from connectors.auth import TokenStore
from connectors.clients import build_client
from connectors.errors import AppError, Conflict, RateLimited
from connectors.http import AppClient
from connectors.quickbooks import MAX_BATCH_ITEMS, QuickBooksClient
from connectors.registry import Connection, Registry, RegistryError
from connectors.sequence import SequenceClient

SEQUENCE = "sequence"
STALE = "5010"
MAX_STALE_RETRIES = 3
MAX_SEQUENCE_CREATES = 3  # creates of one import in one apply, each after a look-up
ECHO = Callable[[str], None]


# ----------------------------------------------------------------------------------------------------------
# Clients that count their requests
# ----------------------------------------------------------------------------------------------------------


class CountingTransport(httpx.BaseTransport):
    """Counts every HTTP request a client makes (retries and token refreshes included)."""

    def __init__(self, counter: Counter, key: str, inner: httpx.BaseTransport | None = None):
        self.counter, self.key = counter, key
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.counter[self.key] += 1
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class Clients:
    """One client per connection, built on first use, closed at the end; counts requests per connection."""

    def __init__(self, registry: Registry, token_store: TokenStore, *,
                 build: Callable[[Connection, httpx.BaseTransport], AppClient] | None = None):
        self.registry = registry
        self.token_store = token_store
        self.requests: Counter = Counter()
        self._clients: dict[str, AppClient] = {}
        self._build = build or (lambda connection, transport: build_client(
            connection, token_store=self.token_store, transport=transport))

    def connection(self, tenant: str, app: str) -> Connection:
        return self.registry.get(f"{tenant}.{app}")

    def get(self, tenant: str, app: str) -> AppClient:
        key = f"{tenant}.{app}"
        if key not in self._clients:
            self._clients[key] = self._build(self.registry.get(key), CountingTransport(self.requests, key))
        return self._clients[key]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


# ----------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------


@dataclass
class ApplyResult:
    counts: Counter = field(default_factory=Counter)  # rows sent, and rows confirmed, failed, skipped
    requests: dict[str, int] = field(default_factory=dict)  # connection -> HTTP requests made
    dry_run: list[str] = field(default_factory=list)  # what would have been sent
    waiting: list[str] = field(default_factory=list)  # keys whose dependencies are not confirmed

    def summary(self) -> str:
        c = self.counts
        return (f"{c['confirmed']} confirmed, {c['failed']} failed, {c['skipped']} skipped, "
                f"{len(self.waiting)} waiting, {sum(self.requests.values())} requests"
                + (f"; dry run: {len(self.dry_run)} writes not sent" if self.dry_run else ""))


def writes_allowed(connection: Connection, allow_writes: bool) -> bool:
    """Writes go to the sandbox (loopback) always, and elsewhere only when explicitly allowed."""
    return allow_writes or connection.is_loopback


# ----------------------------------------------------------------------------------------------------------
# $refs
# ----------------------------------------------------------------------------------------------------------


def refs_in(value: Any) -> set[str]:
    if isinstance(value, str):
        target = ref_target(value)
        return {target[0]} if target else set()
    if isinstance(value, dict):
        return set().union(*(refs_in(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(refs_in(v) for v in value)) if value else set()
    return set()


def resolve(value: Any, ids: Mapping[str, Mapping[str, str | None]]) -> Any:
    """Fills each "$ref:<key>[:<id field>]" with the id it names of the confirmed write `key` (ids: key ->
    {app_id, sequence_id}, outbox.states). A KeyError names a ref that cannot be filled (no such confirmed write,
    or the write has no such id)."""
    target = ref_target(value)
    if target is not None:
        key, id_field = target
        filled = (ids.get(key) or {}).get(id_field)
        if filled is None:
            raise KeyError(f"{key} ({id_field})")
        return filled
    if isinstance(value, dict):
        return {k: resolve(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, ids) for v in value]
    return value


# ----------------------------------------------------------------------------------------------------------
# Is the change already there? (after a stale SyncToken)
# ----------------------------------------------------------------------------------------------------------


def _same(want: Any, have: Any) -> bool:
    if isinstance(want, bool) or isinstance(have, bool):
        return want == have
    if isinstance(want, int | float | Decimal) or isinstance(have, int | float | Decimal):
        try:
            return Decimal(str(want)) == Decimal(str(have))
        except (InvalidOperation, TypeError):
            return False
    if isinstance(want, str) or want is None:
        return (want or "").strip() == (have if isinstance(have, str) else "" if have is None else str(have)).strip()
    return want == have


def already_applied(payload: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    """Whether every field a sparse update sends already holds that value in the app's record (lines compared
    by what Sequence manages: description, item, quantity, rate, tax code, amount)."""
    for key, want in payload.items():
        if key in ("Id", "SyncToken", "sparse"):
            continue
        have = record.get(key)
        if key == "Line":
            lines = [line for line in have or [] if line.get("DetailType") == "SalesItemLineDetail"]
            if len(lines) != len(want) or not all(_subset(w, h, skip=("Id",)) for w, h in zip(want, lines)):
                return False
        elif isinstance(want, dict):
            if not _subset(want, have or {}):
                return False
        elif not _same(want, have):
            return False
    return True


def _subset(want: Mapping[str, Any], have: Mapping[str, Any], skip: tuple[str, ...] = ()) -> bool:
    for key, value in want.items():
        if key in skip:
            continue
        if isinstance(value, dict):
            if not _subset(value, have.get(key) or {}):
                return False
        elif not _same(value, have.get(key)):
            return False
    return True


def is_void(record: Mapping[str, Any]) -> bool:
    return record.get("PrivateNote") == "Voided" and _same(0, record.get("TotalAmt"))


# ----------------------------------------------------------------------------------------------------------
# Apply
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Row:
    key: str
    tenant: str
    app: str
    entity: str
    operation: str
    sequence_id: str | None
    app_id: str | None
    payload: dict[str, Any]
    depends_on: list[str]
    state: str
    attempts: int
    request_id: str | None
    batch_item: str | None
    counterpart_app: str | None = None  # the accounting app of the pair (a Sequence write's too)

    @staticmethod
    def of(row: Mapping[str, Any]) -> _Row:
        return _Row(row["idempotency_key"], row["tenant"], row["app"], row["entity"], row["operation"],
                    row["sequence_id"], row["app_id"], orjson.loads(row["payload"]), list(row["depends_on"] or []),
                    row["state"], row["attempts"], row["request_id"], row["batch_item"], row.get("counterpart_app"))

    @property
    def resend(self) -> bool:
        """Sent before: its first request may have reached the app."""
        return self.request_id is not None or self.attempts > 0

    def fresh_request_id(self) -> str:
        """The requestid of a first send: the key; of a resend after a definite refusal (nothing was written),
        the key and the attempt (an app may keep the refusal under the old requestid)."""
        return self.key if self.attempts == 0 else f"{self.key}-{self.attempts}"


def batch_id(keys: Iterable[str]) -> str:
    """A batch's requestid (≤ 36 characters), the same for the same members."""
    return "lb" + hashlib.blake2b("\x1f".join(sorted(keys)).encode(), digest_size=16).hexdigest()


class Applier:
    def __init__(self, con: duckdb.DuckDBPyConnection, clients: Clients, *, allow_writes: bool = False,
                 echo: ECHO = print, registry_path: Path | None = None, batch_size: int = MAX_BATCH_ITEMS):
        self.con, self.clients, self.allow_writes, self.echo = con, clients, allow_writes, echo
        self.registry_path = registry_path
        self.batch_size = max(1, min(batch_size, MAX_BATCH_ITEMS))
        self.result = ApplyResult()

    # ----- the loop ------------------------------------------------------------------------------------------

    def run(self, *, tenants: Iterable[str] | None = None, keys: Iterable[str] | None = None) -> ApplyResult:
        outbox.ensure(self.con)
        self._record_item_mappings()
        rows = [_Row.of(r) for r in outbox.pending(self.con, tenants=tenants, keys=keys).to_dicts()]
        live, unknown = [], []
        for row in rows:
            connection = self._connection(row)
            if connection is None:
                unknown.append(row.key)
            elif writes_allowed(connection, self.allow_writes):
                live.append(row)
            else:
                self.result.dry_run.append(self._describe(row))
        for line in self.result.dry_run:
            self.echo(f"[dry run] {line}")
        remaining = {row.key: row for row in live}
        while remaining:
            known = outbox.states(self.con, {d for row in remaining.values() for d in row.depends_on})
            ready = [row for row in remaining.values()
                     if all(known.get(d, {}).get("state") == "confirmed" for d in row.depends_on)]
            if not ready:
                break
            sendable = []
            for row in ready:
                del remaining[row.key]
                # a write only ever takes ids its own tenant's writes created
                ids = {k: v for k, v in known.items() if v["state"] == "confirmed" and v["tenant"] == row.tenant}
                try:
                    row.payload = resolve(row.payload, ids)
                except KeyError as missing:
                    self.echo(f"[apply] {row.key} names write {missing.args[0]}, which is another tenant's or has no "
                              "such id; it is not sent")
                    unknown.append(row.key)
                    continue
                sendable.append(row)
            self._wave(sendable)
            self._record_item_mappings()
        self.result.waiting = sorted([*remaining, *unknown])
        self.result.requests = dict(self.clients.requests)
        return self.result

    def _connection(self, row: _Row) -> Connection | None:
        try:
            return self.clients.connection(row.tenant, row.app)
        except RegistryError as exc:  # a connection the registry no longer has: the row stays pending
            self.echo(f"[apply] {row.key} is not sent: {exc}")
            return None

    def _wave(self, rows: list[_Row]) -> None:
        by_connection: dict[tuple[str, str], list[_Row]] = {}
        for row in rows:
            by_connection.setdefault((row.tenant, row.app), []).append(row)
        for (_tenant, app), group in sorted(by_connection.items()):
            writers.writer_of(app).send(self, group)

    def _finish(self, outcomes: list[Outcome]) -> None:
        outbox.record(self.con, outcomes)
        for o in outcomes:
            self.result.counts[o.state] += 1

    # ----- QuickBooks ----------------------------------------------------------------------------------------

    def _quickbooks(self, rows: list[_Row]) -> None:
        # a document link is recorded in reconcile.links: nothing goes to QuickBooks
        local = [r for r in rows if r.operation == "link"]
        self._finish([Outcome(r.key, "confirmed", answer=dumps({"linked": r.payload})) for r in local])
        rows = [r for r in rows if r not in local]
        if not rows:
            return
        # A row with a requestid may have been written: it goes again under that requestid (QuickBooks replays
        # its first answer), in its batch if it was sent in one. Fresh rows go 30 to a batch.
        earlier: dict[str, list[_Row]] = {}
        singles: list[tuple[_Row, str]] = []
        fresh: list[_Row] = []
        for row in rows:
            if row.request_id and row.batch_item:
                earlier.setdefault(row.request_id, []).append(row)
            elif row.request_id:
                singles.append((row, row.request_id))
            else:
                fresh.append(row)
        for request_id, members in earlier.items():
            self._batch(members, request_id, [m.batch_item for m in members])
        for start in range(0, len(fresh), self.batch_size):
            chunk = fresh[start:start + self.batch_size]
            if len(chunk) == 1:
                singles.append((chunk[0], chunk[0].fresh_request_id()))
            else:
                self._batch(chunk, batch_id(r.fresh_request_id() for r in chunk),
                            [f"b{i + 1}" for i in range(len(chunk))])
        for row, request_id in singles:
            self._single(row, request_id)

    def _client(self, row: _Row) -> QuickBooksClient:
        client = self.clients.get(row.tenant, QUICKBOOKS)
        assert isinstance(client, QuickBooksClient)
        return client

    @staticmethod
    def _body(row: _Row) -> dict[str, Any]:
        return {k: v for k, v in row.payload.items() if k != "sparse"}

    def _mark_sent(self, rows: list[_Row], request_id: str | None, items: list[str | None]) -> None:
        outbox.mark_sent(self.con, [(r.key, request_id, b) for r, b in zip(rows, items, strict=True)],
                         payloads={r.key: dumps(r.payload) for r in rows})
        for row, item in zip(rows, items, strict=True):
            row.attempts += 1
            row.request_id, row.batch_item = request_id, item
        self.result.counts["sent"] += len(rows)

    def _batch(self, rows: list[_Row], request_id: str, items: list[str]) -> None:
        client = self._client(rows[0])
        self._mark_sent(rows, request_id, list(items))
        request = []
        for row, bid in zip(rows, items, strict=True):
            name = QBO_ENTITIES[row.entity]
            if row.operation == "void":
                request.append({"bId": bid, "operation": "update", "optionsData": "void", name: row.payload})
            elif row.operation in ("create", "create_item"):
                request.append({"bId": bid, "operation": "create", name: row.payload})
            else:
                request.append({"bId": bid, "operation": "update", name: {**row.payload, "sparse": True}})
        # Pacing is the client's: QuickBooksClient.batch charges every item against the per-minute limit on every
        # attempt (and the batch call against 40/min), and waits out a 429 (no Retry-After) before resending.
        try:
            answers = {a.get("bId"): a for a in client.batch(request, request_id=request_id)}
        except AppError as exc:
            self._finish([self._failure(r, exc) for r in rows])
            return
        outcomes, stale = [], []
        for row, bid in zip(rows, items, strict=True):
            answer = answers.get(bid)
            fault = client.fault_of(answer) if answer is not None else None
            if answer is None:
                outcomes.append(Outcome(row.key, "failed", error=f"the batch answer has no item {bid}",
                                        retriable=False))
            elif fault is None:
                outcomes.append(self._confirmed(row, answer.get(QBO_ENTITIES[row.entity]) or {}))
            elif isinstance(fault, Conflict) and fault.code == STALE:
                stale.append((row, fault))
            else:
                outcomes.append(self._failure(row, fault))
        self._finish(outcomes)
        for row, fault in stale:  # the batch's answer is kept under its requestid: these go alone
            self._stale(row, fault)

    def _single(self, row: _Row, request_id: str, *, stale_retries: int = 0) -> None:
        client = self._client(row)
        self._mark_sent([row], request_id, [None])
        name = QBO_ENTITIES[row.entity]
        try:
            if row.operation in ("create", "create_item"):
                answer = client.create(name, row.payload, request_id=request_id)
            elif row.operation == "void":
                answer = client.void_invoice(row.payload["Id"], row.payload["SyncToken"], request_id=request_id)
            else:
                answer = client.update(name, self._body(row), request_id=request_id, sparse=True)
        except Conflict as exc:
            if exc.code == STALE:
                self._stale(row, exc, stale_retries=stale_retries)
            else:
                self._finish([self._failure(row, exc)])
            return
        except AppError as exc:
            self._finish([self._failure(row, exc)])
            return
        self._finish([self._confirmed(row, answer)])

    def _stale(self, row: _Row, error: AppError, *, stale_retries: int = 0) -> None:
        """5010: read the record again and decide anew (skip it if the change is already there, else send it
        once more with the fresh SyncToken, under a new requestid: the refused one wrote nothing)."""
        client = self._client(row)
        name = QBO_ENTITIES[row.entity]
        try:
            current = client.read(name, row.payload["Id"])
        except AppError as exc:
            self._finish([self._failure(row, exc)])
            return
        done = is_void(current) if row.operation == "void" else already_applied(row.payload, current)
        if done:
            self._finish([Outcome(row.key, "skipped", answer=dumps(current),
                                  error=f"already in QuickBooks (SyncToken {current.get('SyncToken')}): nothing to "
                                        "write")])
            return
        if stale_retries >= MAX_STALE_RETRIES:
            self._finish([Outcome(row.key, "failed", retriable=True,
                                  error=f"{error}: the record keeps changing; the next apply tries again")])
            return
        row.payload = {**row.payload, "SyncToken": str(current.get("SyncToken"))}
        self._single(row, row.fresh_request_id(), stale_retries=stale_retries + 1)

    def _confirmed(self, row: _Row, answer: Mapping[str, Any]) -> Outcome:
        created = row.operation in ("create", "create_item")
        return Outcome(row.key, "confirmed", answer=dumps(answer),
                       app_id=str(answer.get("Id")) if created and answer.get("Id") is not None else None)

    @staticmethod
    def _failure(row: _Row, error: AppError) -> Outcome:
        """A failed write, its error naming the record (Sequence id and app id) before the app's own answer
        (which names the field, e.g. QuickBooks' `element Line`, and the reason). A rate limit is retriable on a
        later apply even when not within this run (Xero's daily limit): a 429 wrote nothing."""
        retriable = bool(error.retriable) or isinstance(error, RateLimited)
        return Outcome(row.key, "failed", error=f"{_record_name(row)}: {error}", retriable=retriable)

    # ----- Sequence ------------------------------------------------------------------------------------------

    def _sequence_rows(self, rows: list[_Row]) -> None:
        for row in rows:
            self._sequence(row)

    def _sequence(self, row: _Row) -> None:
        client = self.clients.get(row.tenant, SEQUENCE)
        assert isinstance(client, SequenceClient)
        try:
            if row.operation == "mark_paid":
                outcome = self._mark_paid(client, row)
            elif row.operation == "import":
                outcome = self._import(client, row)
            elif row.operation == "link":
                outcome = self._link(client, row)
            else:
                outcome = Outcome(row.key, "failed", error=f"no Sequence write for {row.operation}", retriable=False)
        except AppError as exc:
            outcome = self._failure(row, exc)
        self._finish([outcome])

    def _mark_paid(self, client: SequenceClient, row: _Row) -> Outcome:
        invoice_id = row.payload["invoiceId"]
        if row.resend:  # the first request may have landed: a payment status is set once
            current = client.get_invoice(invoice_id)
            if current.get("paymentStatus") == row.payload["paymentStatus"]:
                return Outcome(row.key, "confirmed", answer=dumps(current))
        self._sent(row)
        return Outcome(row.key, "confirmed",
                       answer=dumps(client.set_payment_status(invoice_id, row.payload["paymentStatus"])))

    def _import(self, client: SequenceClient, row: _Row) -> Outcome:
        alias = row.payload["customerAliases"][0]
        for attempt in range(1, MAX_SEQUENCE_CREATES + 1):
            # Sequence has no idempotency key: look the customer up by its alias before every create
            found = client.get_customer_by_alias(alias)
            if found is not None:
                return Outcome(row.key, "confirmed", answer=dumps(found), sequence_id=str(found["id"]))
            self._sent(row)
            try:
                created = client.create_customer(row.payload)
            except AppError as exc:
                # a 5xx or a dropped connection: the create may have landed; the look-up decides
                if not exc.retriable or attempt == MAX_SEQUENCE_CREATES:
                    raise
                continue
            return Outcome(row.key, "confirmed", answer=dumps(created), sequence_id=str(created["id"]))
        raise AssertionError("unreachable")

    def _link(self, client: SequenceClient, row: _Row) -> Outcome:
        """Stores the QuickBooks (or Xero) id as the customer's integration id (PUT replaces the customer whole,
        so the body is the customer as it is now plus the id); one id per service."""
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
                                 f"customer {ours[0]['id']}; unlink it first")
        body = customer_request(current)
        body["integrationIds"] = [*ids, {"service": wanted["service"], "id": wanted["id"]}]
        self._sent(row)
        return Outcome(row.key, "confirmed", answer=dumps(client.update_customer(customer_id, body)),
                       app_id=wanted["id"])

    def _sent(self, row: _Row) -> None:
        self._mark_sent([row], None, [None])

    # ----- dry run, item mappings ------------------------------------------------------------------------------

    def _describe(self, row: _Row) -> str:
        """One line saying what apply would send for a row (method, URL, requestid, body)."""
        connection = self.clients.connection(row.tenant, row.app)
        return writers.writer_of(row.app).describe(self, row, connection)

    @staticmethod
    def _describe_quickbooks(row: _Row, connection: Connection) -> str:
        if row.operation == "link":
            return f"{row.tenant}: record link {row.entity} {row.sequence_id} -> {row.app_id} in reconcile.links"
        name = QBO_ENTITIES[row.entity].lower()
        void = "&operation=void" if row.operation == "void" else ""
        url = f"{connection.base_url}/v3/company/{connection.options.get('realm_id')}/{name}?requestid={row.key}{void}"
        return f"{row.tenant}: {row.operation} POST {url} {dumps(row.payload)}"

    @staticmethod
    def _describe_sequence(row: _Row, connection: Connection) -> str:
        base, body = connection.base_url, dumps(row.payload)
        if row.operation == "mark_paid":
            return f"{row.tenant}: mark_paid PUT {base}/invoices/{row.sequence_id}/payment-status {body}"
        if row.operation == "import":
            alias = row.payload["customerAliases"][0]
            return f"{row.tenant}: import GET {base}/customers/by-alias/{alias}, if absent POST {base}/customers {body}"
        return (f"{row.tenant}: link GET {base}/customers/{row.sequence_id}, if the id is not there PUT it with "
                f"integrationIds {dumps(row.payload.get('integrationIds'))}")

    def _record_item_mappings(self) -> None:
        """Items write-back created become the products' mappings in the tenant's settings (the registry), as
        Sequence keeps a product's link to its item; reconciliation then expects the product's lines on it."""
        for writer in writers.writers():
            if writer.record_items is not None:
                writer.record_items(self)

    def _record_quickbooks_items(self) -> None:
        """QuickBooks' items go into the tenant's settings: product -> {item_id, account_code}."""
        if self.registry_path is None or not Path(self.registry_path).exists():
            return
        created = created_items(self.con, QUICKBOOKS)
        if not created:
            return
        codes: dict[tuple[str, str], str] = {}
        if table_exists(self.con, "unified.accounts"):
            codes = {(t, i): c for t, i, c in self.con.execute(
                "select tenant, id, code from unified.accounts where app = 'quickbooks'").fetchall()}
        items, account_codes = {}, {}
        for tenant, product, item_id, payload in created:
            items[(tenant, product)] = item_id
            account = (payload.get("IncomeAccountRef") or {}).get("value")
            account_codes[(tenant, product)] = codes.get((tenant, account))
        record_item_mappings(Path(self.registry_path), items, account_codes)


def created_items(con: duckdb.DuckDBPyConnection, app: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(tenant, product, item id, payload) of every confirmed create_item of `app` in the outbox."""
    return [(tenant, product, item_id, orjson.loads(payload)) for tenant, product, item_id, payload in con.execute(
        f"select tenant, sequence_id, app_id, payload from {outbox.OUTBOX_TABLE} where operation = 'create_item' "
        "and state = 'confirmed' and app_id is not null and app = ?", [app]).fetchall()]


def record_item_mappings(registry_path: Path, items: Mapping[tuple[str, str], str],
                         codes: Mapping[tuple[str, str], str | None]) -> int:
    """Adds product -> {item_id, account_code} to the tenants' (QuickBooks) settings in the registry file
    (rewritten atomically); mappings already there are left alone. Returns how many were added."""
    return add_item_mappings(registry_path, [
        (tenant, product, {"item_id": str(item_id), **({"account_code": codes[(tenant, product)]}
                                                        if codes.get((tenant, product)) else {})})
        for (tenant, product), item_id in sorted(items.items())])


def add_item_mappings(registry_path: Path, entries: Iterable[tuple[str, str, dict[str, str]]],
                      app: str | None = None) -> int:
    """Adds (tenant, product, mapping) to the item mappings (`items: {product: mapping}`) of the tenants'
    settings in the registry file: `app` None, the tenant's own settings (QuickBooks'); else the settings of its
    connection to `app`. Rewritten atomically; a product already mapped to an item is left alone. Returns how
    many were added."""
    document = yaml.safe_load(registry_path.read_text()) or {}
    added = 0
    for tenant, product, mapping in entries:
        owner = (document.get("tenants") or {}).get(tenant)
        if app is not None:
            owner = ((owner or {}).get("connections") or {}).get(app)
        if not isinstance(owner, dict):
            continue
        settings = owner.get("settings") or {}
        owner["settings"] = settings
        items = settings.get("items") or {}
        settings["items"] = items
        if (items.get(product) or {}).get("item_id"):
            continue
        items[product] = mapping
        added += 1
    if added:
        tmp = registry_path.with_name(f".{registry_path.name}.tmp")
        tmp.write_text(yaml.safe_dump(document, sort_keys=False))
        tmp.replace(registry_path)
    return added


def _record_name(row: _Row) -> str:
    app = writers.label_of(row.app)
    # a Sequence write's app id is its counterpart's (QuickBooks' when the row predates counterpart_app)
    owner = row.app if row.app != SEQUENCE else (row.counterpart_app or QUICKBOOKS)
    ids = [f"Sequence {row.sequence_id}" if row.sequence_id else None,
           f"{writers.label_of(owner)} {row.app_id}" if row.app_id else None]
    return f"{row.operation} in {app} of {row.entity.replace('_', ' ')} ({', '.join(i for i in ids if i)})"


def customer_request(customer: Mapping[str, Any]) -> dict[str, Any]:
    """A CreateOrUpdateCustomerRequest that keeps a Sequence customer as it is (PUT replaces it whole)."""
    body: dict[str, Any] = {
        "legalName": customer.get("legalName"),
        "address": {k: v for k, v in (customer.get("address") or {}).items() if v not in (None, "")},
        "taxStatus": customer.get("taxStatus") or "TAXED",
        "contacts": [{"name": c.get("name"), "email": c.get("email"), "billingPreference": c.get("billingPreference")}
                     for c in customer.get("contacts") or [] if isinstance(c, dict) and not c.get("archivedAt")],
    }
    for key in ("label", "url", "status", "parentId"):
        if customer.get(key) not in (None, ""):
            body[key] = customer[key]
    if isinstance(customer.get("customProperties"), dict):
        body["customProperties"] = customer["customProperties"]
    return body


def apply(con: duckdb.DuckDBPyConnection, registry: Registry, token_store: TokenStore, *,
          tenants: Iterable[str] | None = None, keys: Iterable[str] | None = None, allow_writes: bool = False,
          echo: ECHO = print, registry_path: Path | None = None,
          build: Callable[[Connection, httpx.BaseTransport], AppClient] | None = None) -> ApplyResult:
    """Sends the pending writes of the outbox (of some tenants, or some keys) and records every outcome."""
    clients = Clients(registry, token_store, build=build)
    try:
        return Applier(con, clients, allow_writes=allow_writes, echo=echo, registry_path=registry_path).run(
            tenants=tenants, keys=keys)
    finally:
        clients.close()


def outcome_counts(con: duckdb.DuckDBPyConnection, keys: Iterable[str] | None = None) -> dict[str, int]:
    frame = outbox.read(con, keys=keys)
    return dict(frame.group_by("state").len().iter_rows()) if frame.height else {}


