"""writeback.outbox: one row per intended write, keyed by its deterministic idempotency key, and every state it
goes through: planned -> sent -> confirmed | failed, or skipped (an invalid payload, a write superseded by a
newer plan or already in the app).

Durability is the point. `mark_sent` commits (attempts + 1, the requestid used) BEFORE the HTTP call and
`mark_confirmed` commits the app's answer right after it, so a crash between the two leaves the row `sent`: the
next apply resends it under the same requestid (QuickBooks replays its first answer) or looks the record up
first (Sequence), and never writes twice. Re-planning inserts only keys that are not there yet; an unsent row
of the same key gets the fresh payload, and a new key for a record that already has a write in flight (or a
confirmed create) waits instead of writing again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import polars as pl

from assets.warehouse import table_exists, transaction

OUTBOX_TABLE = "writeback.outbox"
LINKS_TABLE = "reconcile.links"
STATES = ("planned", "sent", "confirmed", "failed", "skipped")
# Writes of one record that may happen once (a second create would duplicate the record) vs. again (an update
# with new content). set_email and update change the same record: one family.
FAMILIES = {"set_email": "update"}
ONE_SHOT = frozenset({"create", "import", "link", "create_item", "void", "mark_paid"})
# Confirmed writes that make a twin: they become reconcile.links rows (method 'writeback').
LINKING = frozenset({"create", "import", "link", "create_item"})
MAX_ATTEMPTS = 5  # a write that keeps failing for retriable reasons is retried on this many applies

DDL = f"""
create schema if not exists writeback;
create table if not exists {OUTBOX_TABLE} (
    idempotency_key varchar primary key,
    tenant varchar not null,
    app varchar not null,                -- where the write goes
    entity varchar not null,
    operation varchar not null,
    sequence_id varchar,
    app_id varchar,                      -- the app's record (filled in by a confirmed create)
    counterpart_app varchar,             -- the connected app of the pair (writes to Sequence too)
    payload varchar not null,            -- JSON text: the write's content
    depends_on varchar[] not null,
    reason varchar,
    state varchar not null check (state in ({", ".join(f"'{s}'" for s in STATES)})),
    attempts integer not null default 0,
    request_id varchar,                  -- the requestid it was sent under (its key, or its batch's id)
    batch_item varchar,                  -- its bId in that batch
    app_answer varchar,                  -- JSON text: the app's answer (records, never secrets)
    error varchar,
    retriable boolean,                   -- a failure worth retrying on the next apply
    planned_at timestamptz not null,
    sent_at timestamptz,
    confirmed_at timestamptz
)
"""
COLUMNS = ("idempotency_key", "tenant", "app", "entity", "operation", "sequence_id", "app_id", "counterpart_app",
           "payload", "depends_on", "reason", "state", "attempts", "request_id", "batch_item", "app_answer", "error",
           "retriable", "planned_at", "sent_at", "confirmed_at")


def ensure(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(DDL)


def now() -> datetime:
    return datetime.now(UTC)


def read(con: duckdb.DuckDBPyConnection, *, tenants: Iterable[str] | None = None,
         keys: Iterable[str] | None = None) -> pl.DataFrame:
    """Outbox rows (all, or of some tenants / keys), an empty frame with the columns when there is no outbox."""
    if not table_exists(con, OUTBOX_TABLE):
        return pl.DataFrame(schema=_schema())
    sql, params = f"select * from {OUTBOX_TABLE} where true", []
    if tenants is not None:
        sql += " and tenant in (select unnest(?))"
        params.append(list(tenants))
    if keys is not None:
        sql += " and idempotency_key in (select unnest(?))"
        params.append(list(keys))
    return con.sql(sql + " order by planned_at, idempotency_key", params=params).pl()


def _schema() -> dict[str, pl.DataType]:
    text = pl.String()
    instant = pl.Datetime("us", "UTC")
    return {name: (pl.List(text) if name == "depends_on" else pl.Int32() if name == "attempts"
                   else pl.Boolean() if name == "retriable" else instant if name.endswith("_at") else text)
            for name in COLUMNS}


# ----------------------------------------------------------------------------------------------------------
# Planning into the outbox
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Merge:
    inserted: int = 0
    refreshed: int = 0  # unsent rows of the same key given the fresh payload
    superseded: int = 0  # unsent rows of the same record replaced by a newer key
    withdrawn: int = 0  # unsent rows the latest plan no longer asks for
    waiting: list[str] = field(default_factory=list)  # new keys held back: the record has that write done or in flight

    def summary(self) -> str:
        return (f"{self.inserted} new, {self.refreshed} refreshed, {self.superseded} superseded, "
                f"{self.withdrawn} withdrawn, {len(self.waiting)} held back (that write is done or in flight)")


def _family(operation: pl.Expr) -> pl.Expr:
    return operation.replace(FAMILIES)


TARGET = ["tenant", "app", "_pair", "entity", "_family", "_sid", "_aid"]


def _with_target(frame: pl.DataFrame) -> pl.DataFrame:
    """The record a write is about. A create's app_id (and an import's sequence_id) is only known once it is
    confirmed, and a Sequence customer has one link per app: those ids are not part of the target. The app of
    the pair is (_pair, an app write's own app): a Sequence import's app_id is a record of the app it comes from
    (QuickBooks customer 9 and HubSpot company 9 are two companies), a Sequence link's of the app it links to."""
    family = _family(pl.col("operation"))
    # rows from before counterpart_app: a Sequence write's pair was QuickBooks
    pair = pl.coalesce("counterpart_app", pl.when(pl.col("app") != "sequence").then("app"), pl.lit("quickbooks"))
    return frame.with_columns(
        _family=family,
        _pair=pair,
        _sid=pl.when(family == "import").then(pl.lit("")).otherwise(pl.col("sequence_id").fill_null("")),
        _aid=pl.when(family.is_in(["create", "create_item", "link"])).then(pl.lit(""))
        .otherwise(pl.col("app_id").fill_null("")))


def _unsent() -> pl.Expr:
    return pl.col("state").is_in(["planned", "skipped"]) & pl.col("request_id").is_null()


def _in_flight() -> pl.Expr:
    """May have reached the app: sent and not recorded, failed for a retriable reason, or reset for a resend."""
    return ((pl.col("state") == "sent") | ((pl.col("state") == "failed") & pl.col("retriable").fill_null(False))
            | ((pl.col("state") == "planned") & pl.col("request_id").is_not_null()))


def merge_plan(con: duckdb.DuckDBPyConnection, plan: pl.DataFrame, *, withdraw_tenants: Iterable[str] | None = None,
               at: datetime | None = None) -> Merge:
    """Puts a plan (plan.PLAN_SCHEMA) into the outbox in one transaction. `withdraw_tenants`: the plan is
    complete for these tenants, so their unsent rows it does not contain are withdrawn."""
    ensure(con)
    at = at or now()
    result = Merge()
    plan = plan.unique(subset=["idempotency_key"], keep="first", maintain_order=True)
    tenants = sorted(set(plan["tenant"].to_list()) | set(withdraw_tenants or ()))
    existing = _with_target(read(con, tenants=tenants))
    plan = _with_target(plan)
    known = existing.select("idempotency_key", pl.col("state").alias("_old_state"),
                            pl.col("request_id").alias("_old_request"), pl.col("payload").alias("_old_payload"),
                            pl.col("error").alias("_old_error"), pl.col("reason").alias("_old_reason"))
    same_key = plan.join(known, on="idempotency_key", how="inner")
    # an unsent row of the same key takes the fresh plan (its dependencies' ids, a newly found problem)
    refresh = same_key.filter(pl.col("_old_state").is_in(["planned", "skipped"]) & pl.col("_old_request").is_null()
                              & (pl.col("payload").ne_missing(pl.col("_old_payload"))
                                 | pl.col("state").ne_missing(pl.col("_old_state"))
                                 | pl.col("error").ne_missing(pl.col("_old_error"))
                                 | pl.col("reason").ne_missing(pl.col("_old_reason"))))
    fresh = plan.join(known, on="idempotency_key", how="anti")
    # a new key for a record whose earlier write may have happened waits; a one-shot write happens once
    others = existing.select(*TARGET, pl.col("idempotency_key").alias("_other"), pl.col("state").alias("_state"),
                             _in_flight().alias("_flight"), _unsent().alias("_unsent"))
    done_once = pl.col("_family").is_in(list(ONE_SHOT)) & (pl.col("_state") == "confirmed")
    blocked = (fresh.join(others, on=TARGET, how="inner").filter(pl.col("_flight") | done_once)
               .get_column("idempotency_key").unique())
    inserts = fresh.filter(~pl.col("idempotency_key").is_in(blocked.implode()))
    superseded = (inserts.select(*TARGET, pl.col("idempotency_key").alias("_by"))
                  .join(others.filter(pl.col("_unsent")), on=TARGET, how="inner")
                  .unique(subset=["_other"], keep="first"))
    withdrawn = existing.filter(pl.col("tenant").is_in(list(withdraw_tenants or [])) & _unsent()
                                & (pl.col("state") == "planned")
                                & ~pl.col("idempotency_key").is_in(plan["idempotency_key"].implode())
                                & ~pl.col("idempotency_key").is_in(superseded["_other"].implode()))
    with transaction(con):
        for row in refresh.select("idempotency_key", "payload", "depends_on", "reason", "state", "error").to_dicts():
            con.execute(f"update {OUTBOX_TABLE} set payload = ?, depends_on = ?, reason = ?, state = ?, error = ?, "
                        "retriable = null where idempotency_key = ?",
                        [row["payload"], row["depends_on"], row["reason"], row["state"], row["error"],
                         row["idempotency_key"]])
        for row in superseded.select("_other", "_by").to_dicts():
            con.execute(f"update {OUTBOX_TABLE} set state = 'skipped', error = ? where idempotency_key = ?",
                        [f"superseded by a newer plan of the same record ({row['_by']})", row["_other"]])
        for key in withdrawn["idempotency_key"].to_list():
            con.execute(f"update {OUTBOX_TABLE} set state = 'skipped', error = ? where idempotency_key = ?",
                        ["withdrawn: the latest plan no longer asks for this write", key])
        if inserts.height:
            frame = inserts.select(
                "idempotency_key", "tenant", "app", "entity", "operation", "sequence_id", "app_id",
                "counterpart_app", "payload", "depends_on", "reason", "state", pl.lit(0, pl.Int32).alias("attempts"),
                "error", pl.lit(at, pl.Datetime("us", "UTC")).alias("planned_at")).to_arrow()
            con.register("_ledgerlink_plan", frame)
            try:
                con.execute(f"insert into {OUTBOX_TABLE} (idempotency_key, tenant, app, entity, operation, "
                            "sequence_id, app_id, counterpart_app, payload, depends_on, reason, state, attempts, "
                            "error, planned_at) select * from _ledgerlink_plan on conflict do nothing")
            finally:
                con.unregister("_ledgerlink_plan")
    result.inserted = inserts.height
    result.refreshed = refresh.height
    result.superseded = superseded.height
    result.withdrawn = withdrawn.height
    result.waiting = blocked.to_list()
    return result


def reset_for_resend(con: duckdb.DuckDBPyConnection, keys: Iterable[str]) -> int:
    """Failed rows back to planned (a re-sync). One whose failure may have been written (retriable: a timeout,
    a 5xx) keeps the requestid it was sent under, so QuickBooks replays it; one the app refused outright wrote
    nothing and is sent as a new request."""
    keys = list(keys)
    if not keys:
        return 0
    with transaction(con):
        count = con.execute(f"select count(*) from {OUTBOX_TABLE} where state = 'failed' and idempotency_key in "
                            "(select unnest(?))", [keys]).fetchall()[0][0]
        con.execute(f"update {OUTBOX_TABLE} set state = 'planned', error = null, "
                    "request_id = case when retriable then request_id end, "
                    "batch_item = case when retriable then batch_item end, retriable = null "
                    "where state = 'failed' and idempotency_key in (select unnest(?))", [keys])
    return count


# ----------------------------------------------------------------------------------------------------------
# State transitions (each one committed)
# ----------------------------------------------------------------------------------------------------------


def pending(con: duckdb.DuckDBPyConnection, *, tenants: Iterable[str] | None = None,
            keys: Iterable[str] | None = None) -> pl.DataFrame:
    """Rows apply works on: planned, sent (a crash between send and record), and failed ones worth retrying."""
    rows = read(con, tenants=tenants, keys=keys)
    return rows.filter((pl.col("state").is_in(["planned", "sent"]))
                       | ((pl.col("state") == "failed") & pl.col("retriable").fill_null(False)
                          & (pl.col("attempts") < MAX_ATTEMPTS)))


def mark_sent(con: duckdb.DuckDBPyConnection, sends: Iterable[tuple[str, str | None, str | None]], *,
              payloads: Mapping[str, str] | None = None) -> None:
    """(key, request_id, batch item) of each row about to be sent: attempts + 1, committed before the call.
    `payloads`: rows whose payload changed for this send (a fresh SyncToken)."""
    at = now()
    payloads = payloads or {}
    with transaction(con):
        for key, request_id, item in sends:
            con.execute(f"update {OUTBOX_TABLE} set state = 'sent', attempts = attempts + 1, request_id = ?, "
                        "batch_item = ?, sent_at = ?, error = null, retriable = null, "
                        "payload = coalesce(?, payload) where idempotency_key = ?",
                        [request_id, item, at, payloads.get(key), key])


@dataclass(frozen=True)
class Outcome:
    """What happened to one row."""

    key: str
    state: str  # confirmed | failed | skipped
    answer: str | None = None  # JSON text
    error: str | None = None
    retriable: bool | None = None
    app_id: str | None = None  # a create's new id in its app
    sequence_id: str | None = None  # an import's new Sequence id


def record(con: duckdb.DuckDBPyConnection, outcomes: Iterable[Outcome]) -> list[dict[str, Any]]:
    """Records outcomes in one transaction, and the twins confirmed writes made into reconcile.links. Returns
    the confirmed rows (as dicts) for the caller's own follow-ups."""
    outcomes = list(outcomes)
    if not outcomes:
        return []
    at = now()
    with transaction(con):
        for o in outcomes:
            con.execute(f"update {OUTBOX_TABLE} set state = ?, app_answer = coalesce(?, app_answer), error = ?, "
                        "retriable = ?, app_id = coalesce(?, app_id), sequence_id = coalesce(?, sequence_id), "
                        "confirmed_at = case when ? = 'confirmed' then ? else confirmed_at end "
                        "where idempotency_key = ?",
                        [o.state, o.answer, o.error, o.retriable, o.app_id, o.sequence_id, o.state, at, o.key])
        confirmed = [o.key for o in outcomes if o.state == "confirmed"]
        rows = read(con, keys=confirmed).to_dicts() if confirmed else []
        _link(con, [r for r in rows if r["operation"] in LINKING], at)
    return rows


def _link(con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]], at: datetime) -> None:
    """Confirmed creates, imports and links into reconcile.links (method 'writeback'), between reconciliations."""
    if not rows or not table_exists(con, LINKS_TABLE):
        return
    for r in rows:
        app = r["counterpart_app"] or r["app"]
        if not (r["sequence_id"] and r["app_id"]):
            continue
        con.execute(f"insert into {LINKS_TABLE} (tenant, app, entity, sequence_id, app_id, method, linked_at) "
                    f"select ?, ?, ?, ?, ?, 'writeback', ? where not exists (select 1 from {LINKS_TABLE} "
                    "where tenant = ? and app = ? and entity = ? and sequence_id = ? and app_id = ?)",
                    [r["tenant"], app, r["entity"], r["sequence_id"], r["app_id"], at,
                     r["tenant"], app, r["entity"], r["sequence_id"], r["app_id"]])


def states(con: duckdb.DuckDBPyConnection, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """key -> {tenant, state, app_id, sequence_id} for dependency checks and $ref resolution."""
    keys = list(keys)
    if not keys:
        return {}
    rows = con.execute(f"select idempotency_key, tenant, state, app_id, sequence_id from {OUTBOX_TABLE} "
                       "where idempotency_key in (select unnest(?))", [keys]).fetchall()
    return {k: {"tenant": t, "state": s, "app_id": a, "sequence_id": q} for k, t, s, a, q in rows}
