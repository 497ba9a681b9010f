"""reconcile.mismatches: one row per disagreement between Sequence and a connected app.

The core is `field_mismatches`, a generic field-by-field diff of linked pairs driven by a list of `FieldSpec`s
(it knows nothing of QuickBooks); `find_mismatches` prepares what Sequence expects (rules.py), pairs records
through reconcile.links, and adds what a field diff cannot see: status differences, records missing on either
side, match candidates, product and tax-code mappings. The app's own field table is an `AppSpec`
(quickbooks.py for QuickBooks).

Every row: tenant, app, entity, sequence_id, app_id, kind, field, sequence_value, app_value (text),
proposed_action, reason (a sentence naming the record). Line-level rows carry their document's ids.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import polars as pl

from assets.reconcile.links import (
    CUSTOMER_MATCHES,
    DOCUMENT_MATCHES,
    MISMATCH_SCHEMA,
    app_label,
    link_app,
    match_candidates,
)
from assets.reconcile.rules import (
    DRAFT,
    SEQUENCE,
    UNIT_SCALE,
    VOID,
    SettingsFrames,
    clean_text,
    currency_conflicts,
    decimal_text,
    expected_billing_email,
    expected_home_total,
    expected_invoice_date,
    expected_item,
    expected_tax_code,
    folded_text,
    home_total_differs,
    import_failures,
    is_paid,
    line_description,
    merchant_email_note,
    minor_units,
    money_text,
    paid_in_app_outcome,
    scaled_decimal,
    with_app_defaults,
)

KINDS = (
    "missing_in_app", "missing_in_sequence", "field_differs", "status_differs", "unlinked_candidate", "invalid",
    "importable", "not_importable", "product_unmapped", "item_name_not_unique", "item_account_differs",
    "tax_code_unresolved", "currency_differs", "stripe_link_ignored", "link_conflict",
)
ACTIONS = ("create_in_app", "update_in_app", "void_in_app", "mark_paid_in_sequence", "import_to_sequence", "link",
           "create_item", "update_item", "fix_settings", "review", "none")
# Kinds that ask somebody to do something; a negative control (stripe_link_ignored) asks nothing.
ACTIONABLE_KINDS = frozenset(KINDS) - {"stripe_link_ignored"}
COMPARES = ("text", "text_ci", "code", "date", "decimal", "money", "boolean")
OPEN_STATUSES = ("OPEN", "PAID")  # issued (finalised or sent) and not voided: these must exist in the app
ENTITY_LABELS = {"customer": "Customer", "invoice": "Invoice", "credit_note": "Credit note", "product": "Product",
                 "tax_category": "Tax category"}


def empty_mismatches() -> pl.LazyFrame:
    return pl.LazyFrame(schema=MISMATCH_SCHEMA)


def settle(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Computes an intermediate result once. Pairs and prepared frames feed a dozen later branches; left lazy,
    every branch would carry (and the optimiser re-examine) the whole plan behind them."""
    return frame.collect().lazy()


# ----------------------------------------------------------------------------------------------------------
# The generic field diff
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    """One compared field.

    field    the reported field name (manifest vocabulary: "due_date", "billing_address.postal_code", "line.rate")
    label    how the reason names it ("due date")
    sequence what Sequence expects: a column name or expression evaluated on the Sequence frame
    app      what the app holds: a column name or expression evaluated on the app frame
    compare  text (trimmed, whitespace collapsed, empty = null) | text_ci (text, case-insensitive: emails) |
             code (ids) | date | decimal (rounded to `scale` digits: quantities, unit prices) |
             money (at the currency's minor units; `currency` names each side's currency column) | boolean
    kind, action   the mismatch kind and proposed action of a difference
    when     Sequence-side condition: rows where it is not true are not compared (e.g. expectation unknown)
    note     Sequence-side text appended to the reason (why Sequence expects this value)
    """

    field: str
    label: str
    sequence: str | pl.Expr
    app: str | pl.Expr
    compare: str = "text"
    kind: str = "field_differs"
    action: str = "update_in_app"
    when: pl.Expr | None = None
    note: pl.Expr | None = None
    currency: tuple[str, str] = ("currency", "currency")
    scale: int = UNIT_SCALE

    def __post_init__(self) -> None:
        if self.compare not in COMPARES:
            raise ValueError(f"FieldSpec {self.field}: compare must be one of {', '.join(COMPARES)}")


def _expr(value: str | pl.Expr) -> pl.Expr:
    return pl.col(value) if isinstance(value, str) else value


def _clean_text(value: pl.Expr) -> pl.Expr:
    """rules.clean_text, faster on text that is already clean: only the whitespace clean_text would change is
    matched (runs of two or more, or one that is not a plain space), so a clean string has no match and is not
    rebuilt. Replacing those by one space is replacing every run by one space (tests check the two agree)."""
    text = value.cast(pl.String).str.replace_all(r"\s{2,}|[^\S ]", " ").str.strip_chars()
    # one reference to `text`: an eager select does not eliminate common subexpressions, and a when/then naming
    # it twice ran the regex twice
    return text.replace("", None)


def _normalised(spec: FieldSpec, value: pl.Expr, currency: pl.Expr | None) -> pl.Expr:
    if spec.compare in ("text", "code"):
        return _clean_text(value)
    if spec.compare == "text_ci":
        return _clean_text(value).str.to_lowercase()
    if spec.compare == "date":
        return value.cast(pl.Date)
    if spec.compare == "decimal":
        return scaled_decimal(value, spec.scale)
    if spec.compare == "money":
        return minor_units(value, currency)
    return value.cast(pl.Boolean)


def _stripped(spec: FieldSpec, value: pl.Expr) -> pl.Expr:
    """A cheap pre-image of `_normalised` for text: two values equal here are equal once normalised. Halving the
    runs of plain spaces (a literal replace, several times cheaper than the regex) keeps every whitespace run a run,
    so clean_text is a function of it; then trimmed (and lower case for text_ci)."""
    stripped = value.cast(pl.String).str.replace_all("  ", " ", literal=True).str.strip_chars()
    return stripped.str.to_lowercase() if spec.compare == "text_ci" else stripped


def _pre_images(spec: FieldSpec) -> list[Callable[[pl.Expr], pl.Expr]]:
    """Pre-images of `_normalised` for text, cheapest first, each applied to the pairs the one before left: trimmed,
    then (text_ci) lower case, then `_stripped`. Each is a function clean_text (and lower case) can be computed
    from, so equal values here are equal once normalised. Most values that differ raw differ only at the edges or
    in case (e-mails), which the cheap steps settle before any string is rebuilt."""
    def trimmed(value: pl.Expr) -> pl.Expr:
        return value.cast(pl.String).str.strip_chars()

    def folded(value: pl.Expr) -> pl.Expr:
        return trimmed(value).str.to_lowercase()

    return [trimmed, *([folded] if spec.compare == "text_ci" else []), lambda value: _stripped(spec, value)]


def _display(spec: FieldSpec, value: pl.Expr, currency: pl.Expr | None) -> pl.Expr:
    if spec.compare in ("text", "text_ci", "code"):
        return _clean_text(value)
    if spec.compare == "decimal":
        return decimal_text(value)
    if spec.compare == "money":
        return money_text(value, currency)
    return value.cast(pl.String)


def _quoted(spec: FieldSpec, text: pl.Expr) -> pl.Expr:
    shown = pl.concat_str([pl.lit("'"), text, pl.lit("'")]) if spec.compare in ("text", "text_ci") else text
    return shown.fill_null(pl.lit("empty"))


def _column(frame: pl.DataFrame, name: str) -> pl.Series:
    """A column in one chunk, for a gather by every pair's row number: from a many-chunk column (a parquet file's
    row groups) that gather is several times slower, and rechunking strings copies only their 16-byte views."""
    return frame.get_column(name).rechunk()


def _key_hash(columns: Sequence[str]) -> pl.Expr:
    """One u64 per row from its key columns (each hashed with its position's seed): a join on one integer is
    several times faster than on two or three strings. Equal keys always hash alike; the rare unequal keys that
    hash alike are told apart by `_pair_index`."""
    hashes = [pl.col(name).hash(seed=1_000_003 * (position + 1)) for position, name in enumerate(columns)]
    out = hashes[0]
    for more in hashes[1:]:
        out = out ^ more
    return out


def _hashable(dtype: pl.DataType) -> bool:
    # strings and integers hash by value alike on both sides (categoricals hash codes, other types are rare keys)
    return dtype == pl.String or dtype.is_integer()


def linked_rows(links: pl.LazyFrame, sequence: pl.DataFrame, app: pl.DataFrame, *, sequence_key: str = "id",
                app_key: str = "id", validate: bool = True) -> tuple[pl.Series, pl.Series]:
    """The linked pairs (`links`: tenant, app, sequence_id, app_id) as row numbers into `sequence` (tenant and
    `sequence_key`) and `app` (tenant, app, `app_key`): one pair per link whose two records are present, in the
    links' order. Pass them to `field_mismatches(rows=...)` with the same frames; the records in no pair are the
    rows not named (e.g. `unpaired(sequence, rows[0])`), which spares two anti joins on string keys."""
    return _pair_index(links, sequence, app, sequence_key, app_key, validate)


def unpaired(frame: pl.DataFrame, rows: pl.Series) -> pl.DataFrame:
    """The rows of `frame` that `rows` (row numbers, from `linked_rows`) does not name."""
    return frame.filter(~_marked(frame.height, rows))


def _row_of(keys: pl.DataFrame, key_names: Sequence[str], frame: pl.DataFrame,
            frame_names: Sequence[str]) -> pl.Series:
    """For each row of `keys`, the row number in `frame` of the record with the same key (`key_names` there,
    `frame_names` here), null when there is none: a join on one hash of the keys, m:1 (a key naming two records
    raises), every match then checked on the real keys, so a hash collision never pairs two records. Two keys of
    `frame` sharing a hash fail the m:1 check on the hashes; the exact join on the keys then decides."""
    if all(_hashable(keys.schema[k]) and keys.schema[k] == frame.schema[f] for k, f in zip(key_names, frame_names)):
        hashes = frame.select(_key_hash(frame_names).alias("_h"))
        # m:1 on the hashes, checked apart: an unordered inner join scattered back to the keys' order is several
        # times cheaper than an ordered, validated left join
        if hashes.get_column("_h").n_unique() == frame.height:
            joined = (keys.select(_key_hash(key_names).alias("_h")).with_row_index("_k")
                      .join(hashes.with_row_index("_r"), on="_h", how="inner"))
            at, matched = joined.get_column("_k"), joined.get_column("_r")
            real = pl.repeat(True, joined.height, dtype=pl.Boolean, eager=True)
            for k, f in zip(key_names, frame_names):
                real = real & (_column(keys, k).gather(at) == _column(frame, f).gather(matched))
            real = real.fill_null(False)  # a null key names nothing, as in a join
            if not real.all():  # a collision with a key `frame` does not have
                at, matched = at.filter(real), matched.filter(real)
            return pl.repeat(None, keys.height, dtype=matched.dtype, eager=True).scatter(at, matched)
        # two keys of `frame` share a hash: the exact join below decides (and raises if a key really is duplicated)
    return (keys.lazy().select(key_names)
            .join(frame.lazy().select(frame_names).with_row_index("_r"), left_on=key_names, right_on=frame_names,
                  how="left", validate="m:1", maintain_order="left")
            .collect(engine="in-memory").get_column("_r"))


def _pair_index(links: pl.LazyFrame, seq: pl.DataFrame, other: pl.DataFrame, sequence_key: str, app_key: str,
                validate: bool) -> tuple[pl.Series, pl.Series]:
    """Row numbers in `seq` and `other` of each linked pair (in the links' order): what an inner join
    of the links (tenant, app, sequence_id, app_id) to both sides on (tenant, `sequence_key`) and (tenant, app,
    `app_key`) finds, with the same m:1 validation.

    The joins run on a hash of the keys; every pair found is then checked on the real keys (gathered by row
    number), so a hash collision can never pair two records. A validation failure (a duplicate key, or two keys
    sharing a hash) falls back to the joins on the real keys, which decide exactly as before."""
    s_keys, a_keys = ["tenant", sequence_key], ["tenant", "app", app_key]
    l_s_keys, l_a_keys = ["tenant", "sequence_id"], ["tenant", "app", "app_id"]  # the same keys in the links
    pairs = links.select(*dict.fromkeys([*l_s_keys, *l_a_keys])).collect(engine="in-memory")
    if validate:
        si, ai = _row_of(pairs, l_s_keys, seq, s_keys), _row_of(pairs, l_a_keys, other, a_keys)
        both = si.is_not_null() & ai.is_not_null()
        return si.filter(both), ai.filter(both)
    check = "m:m"  # without validation a key may name several records: every combination is a pair
    if all(_hashable(pairs.schema[lk]) and pairs.schema[lk] == seq.schema[k] for lk, k in zip(l_s_keys, s_keys)) and \
            all(_hashable(pairs.schema[lk]) and pairs.schema[lk] == other.schema[k] for lk, k in zip(l_a_keys, a_keys)):
        try:
            index = (pairs.lazy().select(_key_hash(l_s_keys).alias("_hs"), _key_hash(l_a_keys).alias("_ha"))
                     .with_row_index("_li")
                     .join(seq.lazy().select(_key_hash(s_keys).alias("_hs")).with_row_index("_si"), on="_hs",
                           how="inner", validate=check, maintain_order="left")
                     .join(other.lazy().select(_key_hash(a_keys).alias("_ha")).with_row_index("_ai"), on="_ha",
                           how="inner", validate=check, maintain_order="left")
                     .select("_li", "_si", "_ai")
                     .collect(engine="in-memory"))
        except pl.exceptions.ComputeError:
            pass  # validation failed: the exact joins below raise if a key really is duplicated
        else:
            li, si, ai = (index.get_column(n) for n in ("_li", "_si", "_ai"))
            same = [_column(pairs, lk).gather(li) == _column(seq, k).gather(si) for lk, k in zip(l_s_keys, s_keys)]
            same += [_column(pairs, lk).gather(li) == _column(other, k).gather(ai) for lk, k in zip(l_a_keys, a_keys)]
            real = same[0]
            for more in same[1:]:
                real = real & more
            real = real.fill_null(False)  # a null key pairs nothing, as in a join
            return si.filter(real), ai.filter(real)
    index = (pairs.lazy()
             .join(seq.lazy().select(s_keys).with_row_index("_si"), left_on=l_s_keys, right_on=s_keys, how="inner",
                   validate=check, maintain_order="left")
             .join(other.lazy().select(a_keys).with_row_index("_ai"), left_on=l_a_keys, right_on=a_keys,
                   how="inner", validate=check, maintain_order="left")
             .select("_si", "_ai")
             .collect(engine="in-memory"))
    return index.get_column("_si"), index.get_column("_ai")


def field_mismatches(sequence: pl.LazyFrame, app: pl.LazyFrame, links: pl.LazyFrame, specs: Sequence[FieldSpec], *,
                     entity: str, subject: str | pl.Expr | None = None, sequence_key: str = "id",
                     app_key: str = "id", sequence_ref: str | None = None, app_ref: str | None = None,
                     validate: bool = True, rows: tuple[pl.Series, pl.Series] | None = None,
                     columnwise: bool = True) -> pl.LazyFrame:
    """Field-by-field diff of linked pairs: one mismatch row per (pair, spec) whose values differ.

    sequence  one row per Sequence record: `tenant`, `sequence_key` and whatever the specs read
    app       one row per app record: `tenant`, `app`, `app_key` and whatever the specs read
    links     the pairs to compare: `tenant`, `app`, `sequence_id`, `app_id` (keys of the two frames)
    subject   Sequence-side text naming the record in reasons (default: "<Entity> <id>")
    sequence_ref, app_ref   columns reported as sequence_id / app_id (default: the keys; lines report documents)
    validate  check that each key names one record on its side (a join `validate="m:1"`); the unified contracts
              already guarantee it, so a caller with inputs known to be unique may skip it (it is about a third
              of the work)
    rows      the pairs as row numbers into `sequence` and `app` (from `linked_rows` on the same frames), when the
              caller has them already: `links` is then not joined again
    columnwise  (default) read each spec's columns only when that spec is compared (keys and what reasons read are
              read first): for inputs that are cheap to read again and give their rows in the same order each
              time, as the reconciliation's are (computed frames, `settle`) and file scans (peak memory is then a
              few columns, not both inputs whole); pass False for plans with joins, which would run once per spec

    Returns a LazyFrame with MISMATCH_SCHEMA's columns, computed when called (like `settle`, with the in-memory
    engine). Work is proportional to the differences: the pairs are found by joining one hash of the keys and
    checked on the real keys (`_pair_index`: a pair is a row on either side); each spec compares its raw values
    gathered by those rows; only pairs whose raw values differ are normalised and compared (normalising is a
    function, so equal raw values can never differ; equal amounts in two currencies are the currency field's
    difference), and only the rows that really differ get their text and reason.
    """
    if not specs:
        return empty_mismatches()
    if subject is None:
        subject = pl.concat_str([pl.lit(ENTITY_LABELS.get(entity, entity.replace("_", " ").capitalize()) + " "),
                                 pl.col(sequence_key)])
    subject = _expr(subject)
    # Each source column crosses the join once: Sequence columns under their own names (so the subject and the
    # notes evaluate after the join, on the few rows that differ), app columns as "_a.<name>"; computed values
    # as _s<i> / _a<i>.
    seq_base = {"tenant", sequence_key, sequence_ref or sequence_key}
    seq_base |= {name for expr in [subject, *(s.note for s in specs if s.note is not None)]
                 for name in expr.meta.root_names()}
    seq_base.discard("app")  # the pair's app comes from the links
    app_base = {app_key, app_ref or app_key} - {"tenant", "app"}
    s_reads: list[list[pl.Expr]] = []  # per spec, what it reads on each side (its value, currency, condition)
    a_reads: list[list[pl.Expr]] = []
    s_refs: list[str] = []
    a_refs: list[str] = []
    for i, spec in enumerate(specs):
        s_val, a_val = _expr(spec.sequence), _expr(spec.app)
        s_refs.append(s_val.meta.output_name() if s_val.meta.is_column() else f"_s{i}")
        a_refs.append(f"_a.{a_val.meta.output_name()}" if a_val.meta.is_column() else f"_a{i}")
        s_read, a_read = [s_val.alias(s_refs[-1])], [a_val.alias(a_refs[-1])]
        if spec.compare == "money":
            s_read.append(pl.col(spec.currency[0]))
            a_read.append(pl.col(spec.currency[1]).alias(f"_a.{spec.currency[1]}"))
        if spec.when is not None:
            s_read.append(spec.when.fill_null(False).alias(f"_w{i}"))
        s_reads.append(s_read)
        a_reads.append(a_read)

    def collected(source: pl.LazyFrame, exprs: Sequence[pl.Expr]) -> pl.DataFrame:
        # in memory: the default streaming engine is much slower at these joins
        unique = {expr.meta.output_name(): expr for expr in reversed(exprs)}  # the first of a name wins
        return source.select(list(reversed(unique.values()))).collect(engine="in-memory")

    s_base = [pl.col(n) for n in sorted(seq_base)]
    a_base = [pl.col("tenant"), pl.col("app"), *(pl.col(n).alias(f"_a.{n}") for n in sorted(app_base))]
    # Both sides are computed once, and the pairs are joined on their keys alone: a pair is a row index on either
    # side. Each spec then compares its two columns gathered by those indexes, one spec at a time (no wide joined
    # frame), and only the candidate pairs get every column they need for normalising, text and reason.
    # `columnwise`: the base frames hold only keys and what reasons read; each spec reads its own columns when it
    # runs (from a file scan, projection pushdown decodes just those), so both inputs are never held whole.
    seq = collected(sequence, s_base if columnwise else [*s_base, *(e for read in s_reads for e in read)])
    other = collected(app, a_base if columnwise else [*a_base, *(e for read in a_reads for e in read)])
    if rows is None:
        rows = _pair_index(links, seq, other, sequence_key, f"_a.{app_key}", validate)
    s_index, a_index = rows
    s_ref_name, a_ref_name = sequence_ref or sequence_key, f"_a.{app_ref or app_key}"
    s_ref, a_ref = pl.col(s_ref_name), pl.col(a_ref_name)
    label = app_label(pl.col("app"))
    # what every reported row reads besides the compared values: the pair's tenant is both sides' (a join key)
    s_shown = ["tenant", s_ref_name, *(n for n in subject.meta.root_names() if n in seq.schema)]
    a_shown = ["app", a_ref_name]

    def compared(i: int, spec: FieldSpec) -> pl.DataFrame:
        s_val, a_val = pl.col(s_refs[i]), pl.col(a_refs[i])
        money = spec.compare == "money"
        s_cur = pl.col(spec.currency[0]) if money else None
        a_cur = pl.col(f"_a.{spec.currency[1]}") if money else None
        s_own, a_own = (collected(sequence, s_reads[i]), collected(app, a_reads[i])) if columnwise else (seq, other)
        # each pair's two raw values, gathered once: the raw comparison reads them and the candidates keep them
        s_raw, a_raw = _column(s_own, s_refs[i]).gather(s_index), _column(a_own, a_refs[i]).gather(a_index)
        keep = _column(s_own, f"_w{i}").gather(s_index) if spec.when is not None else None
        if s_raw.dtype == a_raw.dtype:
            raw_differs = s_raw.ne_missing(a_raw)
            keep = raw_differs if keep is None else keep & raw_differs
        s_rows, a_rows = s_index, a_index
        if keep is not None:
            s_rows, a_rows, s_raw, a_raw = (column.filter(keep) for column in (s_index, a_index, s_raw, a_raw))
        # the candidates carry only what normalising reads; the few rows that really differ get the rest
        s_more = [spec.currency[0]] if money and spec.currency[0] != s_refs[i] else []
        a_more = [f"_a.{spec.currency[1]}"] if money and f"_a.{spec.currency[1]}" != a_refs[i] else []
        candidates = pl.DataFrame([s_rows.alias("_si"), a_rows.alias("_ai"), s_raw, a_raw,
                                   *(_column(s_own, n).gather(s_rows) for n in s_more),
                                   *(_column(a_own, n).gather(a_rows) for n in a_more)])
        if spec.compare in ("text", "text_ci", "code"):
            # cheap steps drop the pairs differing only in spaces, at the edges or in case before the regex
            for pre_image in _pre_images(spec):
                candidates = candidates.filter(pre_image(s_val).ne_missing(pre_image(a_val)))
        differing = candidates.filter(_normalised(spec, s_val, s_cur).ne_missing(_normalised(spec, a_val, a_cur)))
        # only the columns the rows show (not every input column: that gather cost more than the rows' text)
        s_cols = dict.fromkeys([*s_shown, s_refs[i], *s_more, *(spec.note.meta.root_names() if spec.note is not None
                                                                  else [])])
        a_cols = dict.fromkeys([*a_shown, a_refs[i], *a_more])
        si, ai = differing.get_column("_si"), differing.get_column("_ai")
        parts = [(seq, [n for n in s_cols if n in seq.schema], si),
                 (s_own, [n for n in s_cols if n not in seq.schema], si),
                 (other, [n for n in a_cols if n in other.schema], ai),
                 (a_own, [n for n in a_cols if n not in other.schema], ai)]
        found = pl.concat([frame.select(pl.col(names).gather(at)) for frame, names, at in parts if names],
                          how="horizontal")
        s_text, a_text = _display(spec, s_val, s_cur), _display(spec, a_val, a_cur)
        note = spec.note.fill_null("") if spec.note is not None else pl.lit("")
        reason = pl.concat_str([subject, pl.lit(f": {spec.label} is "), _quoted(spec, s_text),
                                pl.lit(" in Sequence but "), _quoted(spec, a_text), pl.lit(" in "), label, note,
                                pl.lit(".")])
        return found.select(
            "tenant", "app", pl.lit(entity).alias("entity"), s_ref.alias("sequence_id"), a_ref.alias("app_id"),
            pl.lit(spec.kind).alias("kind"), pl.lit(spec.field).alias("field"), s_text.alias("sequence_value"),
            a_text.alias("app_value"), pl.lit(spec.action).alias("proposed_action"), reason.alias("reason"))

    # one spec per thread: Polars releases the GIL, and each spec's gathers and comparisons are single columns
    with ThreadPoolExecutor(max_workers=min(len(specs), os.cpu_count() or 1)) as pool:
        out = list(pool.map(compared, range(len(specs)), specs))
    return pl.concat(out, how="vertical").lazy()


# ----------------------------------------------------------------------------------------------------------
# What an app contributes: its field tables and how its lines are linked
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppSpec:
    """The per-app part of reconciliation. Field specs read the prepared frames documented in `find_mismatches`."""

    app: str
    customer_fields: tuple[FieldSpec, ...]
    document_fields: tuple[FieldSpec, ...]  # invoices and credit notes
    line_fields: tuple[FieldSpec, ...]
    line_link_key: Callable[[], pl.Expr]  # on an app line: the value Sequence stores in its line links
    documents: tuple[str, ...] = ("invoice", "credit_note")


DOCUMENT_TABLES = {"invoice": ("invoices", "invoice_lines"), "credit_note": ("credit_notes", "credit_note_lines")}


# ----------------------------------------------------------------------------------------------------------
# Pairs
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pairs:
    pairs: pl.LazyFrame  # tenant, app, sequence_id, app_id: 1:1 and both records present
    linked_sequence: pl.LazyFrame  # tenant, sequence_id of every Sequence record with a link to a present twin
    dangling_sequence: pl.LazyFrame  # tenant, sequence_id of Sequence records whose only links lead nowhere
    linked_app: pl.LazyFrame  # tenant, app, app_id of every app record some Sequence record links
    rows: pl.LazyFrame  # link conflicts and links to records the app no longer has
    # each pair's row numbers in the Sequence and app frames given (in the order of `pairs`), for
    # `field_mismatches(rows=...)` and gathers on those frames
    index: tuple[pl.Series, pl.Series]
    unlinked_sequence: pl.LazyFrame  # the Sequence frame's records not in linked_sequence
    unlinked_app: pl.LazyFrame  # the app frame's records not in linked_app


def _pairs(links: pl.LazyFrame, entity: str, sequence: pl.LazyFrame, app: pl.LazyFrame, subject: pl.Expr,
           app_name: str) -> _Pairs:
    """Each link of `entity` to `app_name` (reconcile.links) checked against both sides: a pair (1:1, both records
    present), a conflict (one of its records has another link), dangling (its app record is gone), or dropped (its
    Sequence record is not in `sequence`). `sequence` (tenant, id, what `subject` reads) and `app` (tenant, app,
    id) are computed frames (`settle`): row numbers into them stay valid. Each link finds its records by a join
    on one hash of the keys, checked on the real keys (`_row_of`); counting and the rest run on those row numbers,
    not on the string keys."""
    own = (links.filter((pl.col("entity") == entity) & (pl.col("app") == app_name) & (pl.col("method") != "settings"))
           .select("tenant", "app", "sequence_id", "app_id").collect(engine="in-memory"))
    seq_keys = sequence.select("tenant", "id").collect(engine="in-memory")
    app_keys = app.select("tenant", "app", "id").collect(engine="in-memory")
    own = own.with_columns(_si=_row_of(own, ["tenant", "sequence_id"], seq_keys, ["tenant", "id"]))
    own = own.filter(pl.col("_si").is_not_null())  # a link from a record this side does not have: not ours
    own = own.with_columns(_ai=_row_of(own, ["tenant", "app", "app_id"], app_keys, ["tenant", "app", "id"]))
    present = own.get_column("_ai").is_not_null()
    twice = _named_twice(own, present, (seq_keys.height, app_keys.height))
    if twice.any():
        # the same link twice is one link, not a conflict (reconcile.links has one row per link already); a key is
        # one row number, so the integers decide
        own = pl.concat([own.filter(present).unique(subset=["_si", "_ai"], keep="first", maintain_order=True),
                         own.filter(~present).unique(subset=["_si", "app_id"], keep="first", maintain_order=True)])
        present = own.get_column("_ai").is_not_null()
        twice = _named_twice(own, present, (seq_keys.height, app_keys.height))
    si, ai = own.get_column("_si"), own.get_column("_ai")
    single = ~twice
    label = app_label(pl.col("app"))
    what = entity.replace("_", " ")
    odd = own.filter(twice | ~present)  # conflicts and dangling links: the subject is worked out for these only
    odd = odd.with_columns(_subject=sequence.select(pl.col(subject.meta.root_names())).collect(engine="in-memory")
                           .select(subject.gather(odd.get_column("_si"))).to_series(),
                           _conflict=twice.filter(twice | ~present))
    conflicts = (odd.lazy().filter(pl.col("_conflict"))
                 .select("tenant", "app", pl.lit(entity).alias("entity"), "sequence_id", "app_id",
                         pl.lit("link_conflict").alias("kind"), pl.lit(None, pl.String).alias("field"),
                         pl.lit(None, pl.String).alias("sequence_value"), pl.col("app_id").alias("app_value"),
                         pl.lit("review").alias("proposed_action"),
                         pl.concat_str([pl.col("_subject"), pl.lit(" is linked to "), label, pl.lit(f" {what} "),
                                        pl.col("app_id"), pl.lit(", but one of the two records has another link too; "
                                                                 "keep one link.")]).alias("reason")))
    dangling = (odd.lazy().filter(~pl.col("_conflict"))
                .select("tenant", "app", pl.lit(entity).alias("entity"), "sequence_id", "app_id",
                        pl.lit("missing_in_app").alias("kind"), pl.lit(None, pl.String).alias("field"),
                        pl.lit(None, pl.String).alias("sequence_value"), pl.lit(None, pl.String).alias("app_value"),
                        pl.lit("review").alias("proposed_action"),
                        pl.concat_str([pl.col("_subject"), pl.lit(" is linked to "), label, pl.lit(f" {what} "),
                                       pl.col("app_id"), pl.lit(", which "), label,
                                       pl.lit(" does not have (deleted there, or not extracted): re-sync or "
                                              "unlink it.")]).alias("reason")))
    pair = single & present
    # a record linked only to a twin that is gone may match another twin: it is offered candidates, not created
    linked_s = _marked(seq_keys.height, si.filter(present))
    linked_a = _marked(app_keys.height, ai.drop_nulls())
    linked = seq_keys.lazy().filter(pl.lit(linked_s)).select("tenant", pl.col("id").alias("sequence_id"))
    dangling_rows = si.filter(~present).unique()
    dangling_rows = dangling_rows.filter(~linked_s.gather(dangling_rows))
    gone_app = own.filter(~present).select("tenant", "app", "app_id").unique()
    return _Pairs(pairs=own.filter(pair).select("tenant", "app", "sequence_id", "app_id").lazy(),
                  linked_sequence=linked,
                  dangling_sequence=seq_keys.select(pl.col("tenant").gather(dangling_rows),
                                                    pl.col("id").gather(dangling_rows).alias("sequence_id")).lazy(),
                  linked_app=pl.concat([app_keys.lazy().filter(pl.lit(linked_a)).rename({"id": "app_id"}),
                                        gone_app.lazy()]),
                  rows=pl.concat([conflicts, dangling], how="vertical"),
                  index=(si.filter(pair), ai.filter(pair)),
                  unlinked_sequence=sequence.filter(pl.lit(~linked_s)),
                  unlinked_app=app.filter(pl.lit(~linked_a)))


def _named_twice(own: pl.DataFrame, present: pl.Series, heights: tuple[int, int]) -> pl.Series:
    """Links (with row numbers `_si`, `_ai` into frames of `heights` rows) whose Sequence or app record another link
    names too: a present record by its row number; an app record that is gone by its key, among the (few) links to
    records that are gone."""
    si, ai = own.get_column("_si"), own.get_column("_ai")
    # usually no row number repeats: counting the rows marked (a scatter) is much cheaper than a hash of each
    twice = si.is_duplicated() if _marked(heights[0], si).sum() < si.len() else pl.repeat(
        False, si.len(), dtype=pl.Boolean, eager=True)
    named = ai.filter(present)
    if _marked(heights[1], named).sum() < named.len():
        twice = twice | (ai.is_duplicated() & present)
    if not present.all():
        gone = own.filter(~present).select(pl.struct("tenant", "app_id").is_duplicated()).to_series()
        twice = twice.scatter((~present).arg_true(), gone)
    return twice


def _marked(height: int, rows: pl.Series) -> pl.Series:
    """A mask of `height` rows, true at `rows`."""
    return pl.repeat(False, height, dtype=pl.Boolean, eager=True).scatter(rows, True)


def _rows(frame: pl.LazyFrame, *, entity: str, kind: str, action: str, reason: pl.Expr,
          sequence_id: pl.Expr | None = None, app_id: pl.Expr | None = None, field: pl.Expr | str | None = None,
          sequence_value: pl.Expr | None = None, app_value: pl.Expr | None = None, app: pl.Expr | None = None
          ) -> pl.LazyFrame:
    none = pl.lit(None, pl.String)
    return frame.select(
        pl.col("tenant"), (app if app is not None else pl.col("app")).alias("app"), pl.lit(entity).alias("entity"),
        (sequence_id if sequence_id is not None else none).cast(pl.String).alias("sequence_id"),
        (app_id if app_id is not None else none).cast(pl.String).alias("app_id"),
        pl.lit(kind).alias("kind"),
        (pl.lit(field) if isinstance(field, str) else field if field is not None else none).alias("field"),
        (sequence_value if sequence_value is not None else none).cast(pl.String).alias("sequence_value"),
        (app_value if app_value is not None else none).cast(pl.String).alias("app_value"),
        pl.lit(action).alias("proposed_action"), reason.alias("reason"))


def _or_id(text: pl.Expr, record_id: pl.Expr) -> pl.Expr:
    return pl.coalesce(_clean_text(text), record_id)


def _customer_subject() -> pl.Expr:
    return pl.concat_str([pl.lit("Customer '"), _or_id(pl.col("name"), pl.col("id")), pl.lit("'")])


def _app_customer_subject() -> pl.Expr:
    return pl.concat_str([pl.lit("customer "), pl.col("id"), pl.lit(" '"), pl.col("name").fill_null(""), pl.lit("'")])


def _document_subject(entity: str) -> pl.Expr:
    return pl.concat_str([pl.lit(ENTITY_LABELS[entity] + " "), _or_id(pl.col("number"), pl.col("id"))])


def _app_document_subject(entity: str) -> pl.Expr:
    number = pl.when(pl.col("number").is_not_null()).then(pl.concat_str([pl.lit(" (number "), pl.col("number"),
                                                                          pl.lit(")")])).otherwise(pl.lit(""))
    return pl.concat_str([pl.lit(entity.replace("_", " ") + " "), pl.col("id"), number])


# ----------------------------------------------------------------------------------------------------------
# The whole reconciliation of one app
# ----------------------------------------------------------------------------------------------------------


def customers_to_create(unlinked_seq: pl.LazyFrame, candidate_pairs: pl.LazyFrame,
                        dangling_sequence: pl.LazyFrame) -> pl.LazyFrame:
    """Unlinked Sequence customers the app should get: active, not DRAFT (not approved yet, never synced), with no
    match candidate (proposed instead) and no dangling link (reported instead)."""
    return (unlinked_seq.filter(pl.col("active").fill_null(True)
                                & (pl.col("app_status").str.to_uppercase() != DRAFT).fill_null(True))
            .join(candidate_pairs, left_on=["tenant", "id"], right_on=["tenant", "sequence_id"], how="anti")
            .join(dangling_sequence, left_on=["tenant", "id"], right_on=["tenant", "sequence_id"], how="anti"))


def find_mismatches(unified: Mapping[str, pl.LazyFrame], links: pl.LazyFrame, settings: SettingsFrames,
                    spec: AppSpec) -> pl.LazyFrame:
    """Every mismatch between Sequence and `spec.app`, for the tenants connected to it (the tenants in
    `settings`). `unified`: table name -> unified frame (checks/unified.py); `links`: reconcile.links.

    Prepared frames the AppSpec's field specs read (Sequence side: what it expects; app side: unified columns):
    customers   both: unified customer columns
    documents   Sequence: unified columns + expected_customer_id, expected_date, expected_billing_email,
                billing_email_note; app: unified columns + app_date (its invoice date)
    lines       Sequence: unified columns + expected_item, expected_tax_code, expected_description;
                app: unified line columns
    """
    app_name = spec.app
    connected = settings.tenants.select("tenant").unique()

    def side(table: str, app: str) -> pl.LazyFrame:
        return settle(unified[table].filter(pl.col("app") == app).join(connected, on="tenant", how="semi"))

    tenants = settle(with_app_defaults(settings.tenants, side("products", app_name), side("tax_codes", app_name)))
    app_links = links.filter(pl.col("app") == app_name)
    out: list[pl.LazyFrame] = []

    # Customers -----------------------------------------------------------------------------------------
    seq_customers = settle(side("customers", SEQUENCE).with_columns(_subject=_customer_subject()))
    app_customers = side("customers", app_name)
    customer = _pairs(app_links, "customer", seq_customers, app_customers, pl.col("_subject"), app_name)
    out.append(customer.rows)
    out.append(field_mismatches(seq_customers, app_customers, customer.pairs, spec.customer_fields,
                                entity="customer", subject=pl.col("_subject"), rows=customer.index))
    unlinked_seq, unlinked_app = customer.unlinked_sequence, customer.unlinked_app
    candidates = match_candidates(unlinked_seq, unlinked_app, entity="customer", rules=CUSTOMER_MATCHES,
                                  subject=pl.col("_subject"), app_subject=_app_customer_subject())
    out.append(candidates.rows)
    label = app_label(pl.lit(app_name))
    # archived customers need no twin, and DRAFT customers (not approved yet) are never synced
    if "app_status" not in seq_customers.collect_schema().names():
        unlinked_seq = unlinked_seq.with_columns(app_status=pl.lit(None, pl.String))
    missing = customers_to_create(unlinked_seq, candidates.pairs, customer.dangling_sequence)
    out.append(_rows(missing, entity="customer", kind="missing_in_app", action="create_in_app", app=pl.lit(app_name),
                     sequence_id=pl.col("id"), reason=pl.concat_str([
                         pl.col("_subject"), pl.lit(" is in Sequence but not linked to any "), label,
                         pl.lit(" customer, and none matches it by email or name: create it in "), label,
                         pl.lit(".")])))
    absent = (unlinked_app.filter(pl.col("active").fill_null(True))
              .join(candidates.pairs, left_on=["tenant", "app", "id"], right_on=["tenant", "app", "app_id"],
                    how="anti"))
    failures = import_failures(absent)
    subject = pl.concat_str([label, pl.lit(" "), _app_customer_subject()])
    out.append(_rows(failures, entity="customer", kind="not_importable", action="review", app_id=pl.col("id"),
                     field=pl.col("field"), app_value=pl.col("value"), reason=pl.concat_str([
                         subject, pl.lit(" is not in Sequence and cannot be imported: it "), pl.col("problem"),
                         pl.lit(" (an import needs an email and a primary address with first line, city, postal "
                                "code and alpha-2 country).")])))
    importable = absent.join(failures.select("tenant", "app", "id").unique(), on=["tenant", "app", "id"], how="anti")
    out.append(_rows(importable, entity="customer", kind="importable", action="import_to_sequence",
                     app_id=pl.col("id"), reason=pl.concat_str([
                         subject, pl.lit(" is not in Sequence; it has an email and a complete address, so it can "
                                         "be imported.")])))

    # Who each Sequence customer is in the app: the expected customer of its documents.
    customer_map = customer.pairs.select("tenant", pl.col("sequence_id").alias("customer_id"),
                                         pl.col("app_id").alias("expected_customer_id"))
    tax_status = seq_customers.select("tenant", pl.col("id").alias("customer_id"), "tax_status")

    # Invoices and credit notes ------------------------------------------------------------------------
    for entity in spec.documents:
        out += _document_mismatches(entity, side, app_name, app_links, tenants, settings, customer_map, tax_status,
                                    app_customers, spec)

    # Products and tax categories -----------------------------------------------------------------------
    out.append(_product_mismatches(side("products", SEQUENCE), side("products", app_name),
                                   side("accounts", app_name), settings, app_name))
    out.append(_tax_category_mismatches(side("tax_codes", SEQUENCE), side("tax_codes", app_name), settings,
                                        tenants, app_name))
    # each part on its own: one plan holding all of them costs more to optimise than to run
    return pl.concat([settle(frame.select(list(MISMATCH_SCHEMA))) for frame in out], how="vertical")


def _document_mismatches(entity: str, side: Callable[[str, str], pl.LazyFrame], app_name: str,
                         app_links: pl.LazyFrame, tenants: pl.LazyFrame, settings: SettingsFrames,
                         customer_map: pl.LazyFrame, tax_status: pl.LazyFrame, app_customers: pl.LazyFrame,
                         spec: AppSpec) -> list[pl.LazyFrame]:
    table, line_table = DOCUMENT_TABLES[entity]
    what = entity.replace("_", " ")
    label = app_label(pl.lit(app_name))
    merchant = pl.col("merchant_email")
    seq_docs = settle(side(table, SEQUENCE).filter(pl.col("status") != DRAFT)
                .join(customer_map, on=["tenant", "customer_id"], how="left", validate="m:1")
                .join(tenants, on="tenant", how="left", validate="m:1")
                .with_columns(
                    _subject=_document_subject(entity),
                    expected_date=expected_invoice_date(pl.col("invoice_date").fill_null("issue"),
                                                        pl.col("issue_date"), pl.col("accounting_date")),
                    expected_billing_email=expected_billing_email(pl.col("app_status"), pl.col("billing_email"),
                                                                  merchant),
                    billing_email_note=merchant_email_note(pl.col("app_status"), merchant),
                    _paid=is_paid(pl.col("status"), pl.col("payment_status"))))
    if "stripe_payment_link" not in seq_docs.collect_schema().names():
        seq_docs = seq_docs.with_columns(stripe_payment_link=pl.lit(None, pl.Boolean))
    app_docs = settle(side(table, app_name).with_columns(app_date=pl.coalesce("issue_date", "accounting_date"),
                                                         _paid=is_paid(pl.col("status"), pl.col("payment_status"))))
    docs = _pairs(app_links, entity, seq_docs, app_docs, pl.col("_subject"), app_name)
    out = [docs.rows]

    # Status: void and paid.
    # each pair's own columns gathered by its row numbers on either side (no join on the string keys)
    pairs, (si, ai) = docs.pairs.collect(), docs.index
    status = pl.concat([
        pairs,
        seq_docs.select("_subject", pl.col("status").alias("_s_status"), pl.col("payment_status").alias("_s_pay"),
                        pl.col("_paid").alias("_s_paid"), "stripe_payment_link")
        .collect(engine="in-memory").select(pl.all().gather(si)),
        app_docs.select(pl.col("status").alias("_a_status"), pl.col("payment_status").alias("_a_pay"),
                        pl.col("_paid").alias("_a_paid"))
        .collect(engine="in-memory").select(pl.all().gather(ai))], how="horizontal").lazy()
    s_void, a_void = pl.col("_s_status") == VOID, pl.col("_a_status") == VOID
    ids = {"sequence_id": pl.col("sequence_id"), "app_id": pl.col("app_id")}
    out.append(_rows(status.filter(s_void & ~a_void), entity=entity, kind="status_differs", action="void_in_app",
                     field="status", sequence_value=pl.col("_s_status"), app_value=pl.col("_a_status"), **ids,
                     reason=pl.concat_str([pl.col("_subject"), pl.lit(" is voided in Sequence but still open in "),
                                           label, pl.lit(": void it in "), label, pl.lit(".")])))
    out.append(_rows(status.filter(a_void & ~s_void), entity=entity, kind="status_differs", action="review",
                     field="status", sequence_value=pl.col("_s_status"), app_value=pl.col("_a_status"), **ids,
                     reason=pl.concat_str([pl.col("_subject"), pl.lit(" is voided in "), label,
                                           pl.lit(" but not in Sequence: check which side is right.")])))
    if entity == "invoice":
        live = status.filter(~s_void & ~a_void)
        kind, action = paid_in_app_outcome(pl.col("stripe_payment_link"))
        stripe = pl.col("stripe_payment_link").fill_null(False)
        paid_there = live.filter(pl.col("_a_paid") & ~pl.col("_s_paid"))
        out.append(paid_there.select(
            "tenant", "app", pl.lit(entity).alias("entity"), "sequence_id", "app_id", kind.alias("kind"),
            pl.lit("payment_status").alias("field"), pl.col("_s_pay").fill_null("UNPAID").alias("sequence_value"),
            pl.lit("PAID").alias("app_value"), action.alias("proposed_action"),
            pl.when(stripe).then(pl.concat_str([
                pl.col("_subject"), pl.lit(" is paid in "), label, pl.lit(" but not in Sequence; it has a Stripe "
                "payment link, so Sequence takes its payment status from Stripe and ignores "), label,
                pl.lit(" (nothing to write; reconcile it in "), label, pl.lit(" separately if needed).")]))
            .otherwise(pl.concat_str([pl.col("_subject"), pl.lit(" is paid in "), label,
                                      pl.lit(" but unpaid in Sequence: mark it paid in Sequence.")])).alias("reason")))
        out.append(_rows(live.filter(pl.col("_s_paid") & ~pl.col("_a_paid")), entity=entity, kind="status_differs",
                         action="review", field="payment_status", sequence_value=pl.lit("PAID"),
                         app_value=pl.col("_a_pay").fill_null("UNPAID"), **ids,
                         reason=pl.concat_str([pl.col("_subject"), pl.lit(" is paid in Sequence but open in "), label,
                                               pl.lit(": record the payment in "), label, pl.lit(".")])))

    # Fields and lines of documents neither side voided (a voided QuickBooks invoice keeps its lines at zero).
    unvoided = status.select(((pl.col("_s_status") != VOID) & (pl.col("_a_status") != VOID)).fill_null(False)) \
        .collect().to_series()
    active = pairs.filter(unvoided).lazy()
    out.append(field_mismatches(seq_docs, app_docs, active, spec.document_fields, entity=entity,
                                subject=pl.col("_subject"), rows=(si.filter(unvoided), ai.filter(unvoided))))
    out += _line_mismatches(entity, side(line_table, SEQUENCE), side(line_table, app_name), seq_docs, active,
                            tenants, settings, tax_status,
                            app_customers.select("tenant", pl.col("id").alias("expected_customer_id"),
                                                 pl.col("default_tax_code").alias("_customer_default_tax_code")),
                            app_name, spec)

    # Records on one side only, and candidates for them.
    unlinked_seq, unlinked_app = docs.unlinked_sequence, docs.unlinked_app
    candidates = match_candidates(unlinked_seq, unlinked_app, entity=entity, rules=DOCUMENT_MATCHES,
                                  subject=pl.col("_subject"), app_subject=_app_document_subject(entity))
    out.append(candidates.rows)
    missing = (unlinked_seq.filter(pl.col("status").is_in(OPEN_STATUSES))
               .join(candidates.pairs, left_on=["tenant", "id"], right_on=["tenant", "sequence_id"], how="anti")
               .join(docs.dangling_sequence, left_on=["tenant", "id"], right_on=["tenant", "sequence_id"], how="anti")
               .with_columns(app=pl.lit(app_name)))
    conflicts = currency_conflicts(missing, app_customers)
    out.append(_rows(conflicts, entity=entity, kind="currency_differs", action="review", field="currency",
                     sequence_id=pl.col("id"), sequence_value=pl.col("currency"),
                     app_value=pl.col("customer_currency"), reason=pl.concat_str([
                         pl.col("_subject"), pl.lit(" is in "), pl.col("currency"), pl.lit(" but its "), label,
                         pl.lit(" customer "), pl.col("expected_customer_id"), pl.lit(" is in "),
                         pl.col("customer_currency"), pl.lit(", so "), label, pl.lit(f" rejects the {what}: issue it "
                         "in the customer's currency or fix the customer.")])))
    never_synced = missing.join(conflicts.select("tenant", "id"), on=["tenant", "id"], how="anti")
    unlinked_customer = pl.when(pl.col("expected_customer_id").is_null()).then(
        pl.concat_str([pl.lit(" (its customer is not linked to "), label, pl.lit(" yet)")])).otherwise(pl.lit(""))
    out.append(_rows(never_synced, entity=entity, kind="missing_in_app", action="create_in_app",
                     sequence_id=pl.col("id"), reason=pl.concat_str([
                         pl.col("_subject"), pl.lit(f" is issued in Sequence but no {what} in "), label,
                         pl.lit(" is linked to it or has its number"), unlinked_customer,
                         pl.lit(": sync it to "), label, pl.lit(".")])))
    only_app = unlinked_app.join(candidates.pairs, left_on=["tenant", "app", "id"],
                                 right_on=["tenant", "app", "app_id"], how="anti")
    out.append(_rows(only_app, entity=entity, kind="missing_in_sequence", action="review", app_id=pl.col("id"),
                     reason=pl.concat_str([label, pl.lit(" "), _app_document_subject(entity),
                                           pl.lit(" has no Sequence counterpart (created in "), label,
                                           pl.lit("?): check whether it should be billed from Sequence.")])))

    # Home-currency conversion with the app's own rate.
    linked_to = docs.pairs.select("tenant", "app", "app_id", "sequence_id")
    converted = (app_docs.filter((pl.col("status") != VOID) & pl.col("exchange_rate").is_not_null()
                                 & pl.col("home_gross_total").is_not_null())
                 .join(tenants.select("tenant", "home_currency"), on="tenant", how="left", validate="m:1")
                 .filter(pl.col("home_currency").is_not_null())
                 .filter(home_total_differs(pl.col("gross_total"), pl.col("exchange_rate"),
                                            pl.col("home_gross_total"), pl.col("home_currency")))
                 .join(linked_to, left_on=["tenant", "app", "id"], right_on=["tenant", "app", "app_id"], how="left",
                       validate="1:1"))
    expected_home = money_text(expected_home_total(pl.col("gross_total"), pl.col("exchange_rate")),
                               pl.col("home_currency"))
    out.append(_rows(converted, entity=entity, kind="field_differs", action="review", field="home_total",
                     sequence_id=pl.col("sequence_id"), app_id=pl.col("id"), sequence_value=expected_home,
                     app_value=money_text(pl.col("home_gross_total"), pl.col("home_currency")),
                     reason=pl.concat_str([label, pl.lit(" "), _app_document_subject(entity),
                                           pl.lit(": home-currency total is "),
                                           money_text(pl.col("home_gross_total"), pl.col("home_currency")),
                                           pl.lit(" "), pl.col("home_currency"), pl.lit(" but its total "),
                                           money_text(pl.col("gross_total"), pl.col("currency")), pl.lit(" "),
                                           pl.col("currency"), pl.lit(" at its own exchange rate "),
                                           decimal_text(pl.col("exchange_rate")), pl.lit(" makes "), expected_home,
                                           pl.lit(".")])))
    return out


def _line_mismatches(entity: str, seq_lines: pl.LazyFrame, app_lines: pl.LazyFrame, seq_docs: pl.LazyFrame,
                     doc_pairs: pl.LazyFrame, tenants: pl.LazyFrame, settings: SettingsFrames,
                     tax_status: pl.LazyFrame, customer_defaults: pl.LazyFrame, app_name: str,
                     spec: AppSpec) -> list[pl.LazyFrame]:
    """Lines of paired documents: paired by the link Sequence stores on the line, else by position.
    `customer_defaults`: (tenant, expected_customer_id, _customer_default_tax_code) of the app's customers."""
    label = app_label(pl.lit(app_name))
    docs = seq_docs.select("tenant", pl.col("id").alias("document_id"), pl.col("_subject").alias("_doc_subject"),
                           "customer_id", "expected_customer_id")
    seq = (seq_lines.join(docs, on=["tenant", "document_id"], how="inner", validate="m:1")
           .join(customer_defaults, on=["tenant", "expected_customer_id"], how="left", validate="m:1")
           .join(tax_status, on=["tenant", "customer_id"], how="left", validate="m:1")
           .join(settings.tax_codes.rename({"tax_code": "_mapped_code"}), on=["tenant", "tax_category_id"],
                 how="left", validate="m:1")
           .join(settings.items.select("tenant", "product_id", pl.col("item_id").alias("_mapped_item")),
                 on=["tenant", "product_id"], how="left", validate="m:1")
           .join(tenants, on="tenant", how="left", validate="m:1")
           .with_columns(
               _key=pl.concat_str(["document_id", pl.lit("\x1f"), "id"]),
               _rank=pl.col("position").rank("ordinal").over("tenant", "document_id"),
               expected_description=line_description(pl.col("group_title"), pl.col("title"), pl.col("description")),
               expected_item=expected_item(pl.col("_mapped_item"), pl.col("default_item_id")),
               expected_tax_code=expected_tax_code(
                   pl.col("tax_status"), pl.col("_mapped_code"), pl.col("fallback_tax_code"),
                   pl.col("exempt_tax_code"), pl.col("reverse_charge_tax_code"), pl.col("account_default_tax_code"),
                   pl.col("_customer_default_tax_code"), pl.col("us_sales_tax")))
           .with_columns(_subject=pl.concat_str([pl.col("_doc_subject"), pl.lit(" line "),
                                                 pl.col("_rank").cast(pl.String)])))
    app = app_lines.with_columns(_key=pl.concat_str(["document_id", pl.lit("\x1f"), "id"]),
                                 _link=spec.line_link_key(),
                                 _rank=pl.col("position").rank("ordinal").over("tenant", "document_id"))
    # Only lines of paired documents are compared.
    seq = settle(seq.join(doc_pairs.select("tenant", pl.col("sequence_id").alias("document_id"),
                                           pl.col("app_id").alias("_app_document")), on=["tenant", "document_id"],
                          how="inner", validate="m:1"))
    app = settle(app.join(doc_pairs.select("tenant", "app", pl.col("app_id").alias("document_id")),
                          on=["tenant", "app", "document_id"], how="semi"))
    by_link = settle(seq.select("tenant", "_key", "_app_document", "links").explode("links")
               .filter(pl.col("links").is_not_null() & (link_app(pl.col("links").struct.field("app")) == app_name))
               .select("tenant", pl.lit(app_name).alias("app"), pl.col("_key").alias("sequence_id"), "_app_document",
                       clean_text(pl.col("links").struct.field("app_id")).alias("_link"))
               .join(app.select("tenant", "app", "_link", pl.col("_key").alias("app_id"), "document_id"),
                     on=["tenant", "app", "_link"], how="inner")
               # a line link into another document than the paired one does not pair the line
               .filter(pl.col("document_id") == pl.col("_app_document"))
               .select("tenant", "app", "sequence_id", "app_id")
               .unique(subset=["tenant", "app", "sequence_id"], keep="first")
               .unique(subset=["tenant", "app", "app_id"], keep="first"))
    rest_seq = settle(seq.join(by_link, left_on=["tenant", "_key"], right_on=["tenant", "sequence_id"], how="anti")
                .with_columns(_left=pl.col("position").rank("ordinal").over("tenant", "document_id")))
    rest_app = settle(app.join(by_link, left_on=["tenant", "app", "_key"], right_on=["tenant", "app", "app_id"],
                               how="anti")
                .with_columns(_left=pl.col("position").rank("ordinal").over("tenant", "app", "document_id")))
    by_position = settle(rest_seq.select("tenant", pl.lit(app_name).alias("app"), pl.col("_key").alias("sequence_id"),
                                   pl.col("_app_document").alias("document_id"), "_left")
                   .join(rest_app.select("tenant", "app", "document_id", "_left", pl.col("_key").alias("app_id")),
                         on=["tenant", "app", "document_id", "_left"], how="inner", validate="1:1")
                   .select("tenant", "app", "sequence_id", "app_id"))
    line_pairs = pl.concat([by_link, by_position], how="vertical")
    out = [field_mismatches(seq, app, line_pairs, spec.line_fields, entity=entity, subject=pl.col("_subject"),
                            sequence_key="_key", app_key="_key", sequence_ref="document_id", app_ref="document_id")]
    # Lines on one side only.
    alone_seq = rest_seq.join(by_position, left_on=["tenant", "_key"], right_on=["tenant", "sequence_id"], how="anti")
    out.append(_rows(alone_seq, entity=entity, kind="field_differs", action="update_in_app", field="line",
                     app=pl.lit(app_name), sequence_id=pl.col("document_id"), app_id=pl.col("_app_document"),
                     sequence_value=pl.col("expected_description"), reason=pl.concat_str([
                         pl.col("_subject"), pl.lit(" ('"), pl.col("expected_description").fill_null(""),
                         pl.lit("') is in Sequence but not on the "), label, pl.lit(f" {entity.replace('_', ' ')}.")])))
    alone_app = (rest_app.join(by_position, left_on=["tenant", "app", "_key"], right_on=["tenant", "app", "app_id"],
                               how="anti")
                 .join(doc_pairs.select("tenant", "app", pl.col("app_id").alias("document_id"), "sequence_id"),
                       on=["tenant", "app", "document_id"], how="left", validate="m:1")
                 .join(seq_docs.select("tenant", pl.col("id").alias("sequence_id"), "_subject"),
                       on=["tenant", "sequence_id"], how="left", validate="m:1"))
    out.append(_rows(alone_app, entity=entity, kind="field_differs", action="update_in_app", field="line",
                     sequence_id=pl.col("sequence_id"), app_id=pl.col("document_id"),
                     app_value=pl.col("description"), reason=pl.concat_str([
                         pl.col("_subject"), pl.lit(": "), label, pl.lit(" has an extra line "),
                         pl.col("_rank").cast(pl.String), pl.lit(" ('"), pl.col("description").fill_null(""),
                         pl.lit("') that Sequence does not have.")])))
    return out


def _product_mismatches(seq_products: pl.LazyFrame, app_products: pl.LazyFrame, app_accounts: pl.LazyFrame,
                        settings: SettingsFrames, app_name: str) -> pl.LazyFrame:
    """Product -> item mapping: unmapped products (an item of the same name blocks creating theirs: item names
    are unique in QuickBooks), mappings to items that do not exist, items booking to another account."""
    label = app_label(pl.lit(app_name))
    products = seq_products.filter(pl.col("active").fill_null(True)).select(
        "tenant", pl.lit(app_name).alias("app"), "id", "name", _name=folded_text(pl.col("name")),
        _subject=pl.concat_str([pl.lit("Product '"), _or_id(pl.col("name"), pl.col("id")), pl.lit("'")]))
    items = app_products.with_columns(_name=folded_text(pl.col("name")))
    mapping = settings.items.rename({"product_id": "id"})
    unmapped = products.join(mapping.filter(pl.col("item_id").is_not_null()), on=["tenant", "id"], how="anti")
    same_name = items.filter(pl.col("active").fill_null(True)).group_by("tenant", "app", "_name").agg(
        pl.col("id").min().alias("_item_id"), pl.col("name").first().alias("_item_name"))
    unmapped = unmapped.join(same_name, on=["tenant", "app", "_name"], how="left", validate="m:1")
    taken = unmapped.filter(pl.col("_item_id").is_not_null())
    free = unmapped.filter(pl.col("_item_id").is_null())
    rows = [
        _rows(taken, entity="product", kind="item_name_not_unique", action="review", field="name",
              sequence_id=pl.col("id"), app_id=pl.col("_item_id"), sequence_value=pl.col("name"),
              app_value=pl.col("_item_name"), reason=pl.concat_str([
                  pl.col("_subject"), pl.lit(" is not mapped to a "), label, pl.lit(" item, and "), label,
                  pl.lit(" item "), pl.col("_item_id"), pl.lit(" already has its name (item names are unique): map "
                                                              "the product to that item or rename one of them.")])),
        _rows(free, entity="product", kind="product_unmapped", action="create_item", field="item",
              sequence_id=pl.col("id"), sequence_value=pl.col("name"), reason=pl.concat_str([
                  pl.col("_subject"), pl.lit(" is not mapped to a "), label,
                  pl.lit(" item, so its lines are booked to the default item: create its item and map it.")])),
    ]
    mapped = (products.join(mapping.filter(pl.col("item_id").is_not_null()), on=["tenant", "id"], how="inner",
                            validate="1:1")
              .join(items.select("tenant", "app", pl.col("id").alias("item_id"), pl.col("name").alias("_item_name"),
                                 "income_account_id", pl.lit(True).alias("_found")),
                    on=["tenant", "app", "item_id"], how="left", validate="m:1"))
    gone = mapped.filter(pl.col("_found").is_null())
    rows.append(_rows(gone, entity="product", kind="product_unmapped", action="fix_settings", field="item",
                      sequence_id=pl.col("id"), app_id=pl.col("item_id"), sequence_value=pl.col("item_id"),
                      reason=pl.concat_str([pl.col("_subject"), pl.lit(" is mapped to "), label, pl.lit(" item "),
                                            pl.col("item_id"), pl.lit(", which "), label,
                                            pl.lit(" does not have: map it to an existing item.")])))
    accounts = app_accounts.select("tenant", "app", pl.col("id").alias("income_account_id"),
                                   clean_text(pl.col("code")).alias("_code"), pl.col("name").alias("_account"))
    booked = (mapped.filter(pl.col("account_code").is_not_null() & pl.col("_found").is_not_null())
              .join(accounts, on=["tenant", "app", "income_account_id"], how="left", validate="m:1")
              .filter(pl.col("_code").ne_missing(pl.col("account_code"))))
    rows.append(_rows(booked, entity="product", kind="item_account_differs", action="update_item",
                      field="account_code", sequence_id=pl.col("id"), app_id=pl.col("item_id"),
                      sequence_value=pl.col("account_code"), app_value=pl.col("_code"), reason=pl.concat_str([
                          pl.col("_subject"), pl.lit(": the settings book it to account "), pl.col("account_code"),
                          pl.lit(" but "), label, pl.lit(" item "), pl.col("item_id"), pl.lit(" books to "),
                          pl.col("_code").fill_null("no account code"),
                          pl.when(pl.col("_account").is_not_null()).then(
                              pl.concat_str([pl.lit(" ("), pl.col("_account"), pl.lit(")")])).otherwise(pl.lit("")),
                          pl.lit(": update the item's income account.")])))
    return pl.concat(rows, how="vertical")


def _tax_category_mismatches(seq_categories: pl.LazyFrame, app_codes: pl.LazyFrame, settings: SettingsFrames,
                             tenants: pl.LazyFrame, app_name: str) -> pl.LazyFrame:
    """Tax category -> tax code mappings (and the fallback, exempt and reverse-charge codes) that name a tax code
    the app does not have or has made inactive."""
    label = app_label(pl.lit(app_name))
    codes = app_codes.select("tenant", pl.col("id").alias("tax_code"),
                             pl.col("active").fill_null(True).alias("_active"), pl.col("name").alias("_code_name"))
    names = seq_categories.select("tenant", pl.col("id").alias("tax_category_id"), pl.col("name").alias("_name"))
    mapped = (settings.tax_codes.filter(pl.col("tax_code").is_not_null())
              .join(codes, on=["tenant", "tax_code"], how="left", validate="m:1")
              .join(names, on=["tenant", "tax_category_id"], how="left", validate="m:1")
              .filter(~pl.col("_active").fill_null(False)))
    problem = pl.when(pl.col("_active").is_null()).then(pl.concat_str([pl.lit(", which "), label,
                                                                       pl.lit(" does not have")])) \
        .otherwise(pl.concat_str([pl.lit(" ("), pl.col("_code_name").fill_null(""), pl.lit("), which is inactive in "),
                                  label]))
    rows = [_rows(mapped, entity="tax_category", kind="tax_code_unresolved", action="fix_settings", field="tax_code",
                  app=pl.lit(app_name), sequence_id=pl.col("tax_category_id"),
                  app_id=pl.when(pl.col("_active").is_not_null()).then(pl.col("tax_code")),
                  sequence_value=pl.col("tax_code"), reason=pl.concat_str([
                      pl.lit("Tax category '"), pl.coalesce("_name", "tax_category_id"),
                      pl.lit("' is mapped to "), label, pl.lit(" tax code "), pl.col("tax_code"), problem,
                      pl.lit(": lines in this category cannot get a tax code; fix the mapping in the settings.")]))]
    defaults = (tenants.unpivot(index="tenant", on=["fallback_tax_code", "exempt_tax_code", "reverse_charge_tax_code"],
                                variable_name="_setting", value_name="tax_code")
                .filter(pl.col("tax_code").is_not_null())
                .join(codes, on=["tenant", "tax_code"], how="left", validate="m:1")
                .filter(~pl.col("_active").fill_null(False)))
    rows.append(_rows(defaults, entity="tax_category", kind="tax_code_unresolved", action="fix_settings",
                      field=pl.col("_setting"), app=pl.lit(app_name),
                      app_id=pl.when(pl.col("_active").is_not_null()).then(pl.col("tax_code")),
                      sequence_value=pl.col("tax_code"), reason=pl.concat_str([
                          pl.lit("The settings' "), pl.col("_setting").str.replace_all("_", " "), pl.lit(" is "),
                          label, pl.lit(" tax code "), pl.col("tax_code"), problem, pl.lit(": fix the settings.")])))
    return pl.concat(rows, how="vertical")


# ----------------------------------------------------------------------------------------------------------
# Records that failed a contract
# ----------------------------------------------------------------------------------------------------------

def invalid_records(quarantine: pl.LazyFrame) -> pl.LazyFrame:
    """Records kept out of the unified model because they failed a contract (unified.quarantine: tenant, app,
    entity, id, check, field, reason; the extraction's own rejections are in it too) as `invalid` mismatches,
    one per record and field. Lines dropped only because their document was quarantined are left out: the
    document is reported."""
    frame = (quarantine.filter(pl.col("check").ne_missing("document_quarantined"))
             .select("tenant", "app", pl.col("entity").cast(pl.String), clean_text(pl.col("id")).alias("_id"),
                     pl.col("field").cast(pl.String), pl.col("reason").cast(pl.String).alias("_why"))
             .unique(subset=["tenant", "app", "entity", "_id", "field"], keep="first", maintain_order=True))
    sequence_side = pl.col("app") == SEQUENCE
    label = app_label(pl.col("app"))
    what = pl.col("entity").str.replace_all("_", " ")
    return frame.select(
        "tenant", "app", "entity",
        pl.when(sequence_side).then(pl.col("_id")).alias("sequence_id"),
        pl.when(~sequence_side).then(pl.col("_id")).alias("app_id"),
        pl.lit("invalid").alias("kind"), "field",
        pl.lit(None, pl.String).alias("sequence_value"), pl.lit(None, pl.String).alias("app_value"),
        pl.lit("review").alias("proposed_action"),
        pl.concat_str([label, pl.lit(" "), what, pl.lit(" "), pl.col("_id").fill_null("(without an id)"),
                       pl.lit(" is invalid ("), pl.col("field").fill_null("record"), pl.lit("): "),
                       pl.col("_why").fill_null("it failed a contract"),
                       pl.lit("; it is left out of reconciliation until it is fixed.")]).alias("reason"))
