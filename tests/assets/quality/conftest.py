"""Unified-model test data: frames typed and validated by the contracts in checks/unified.py, so the rules are
exercised on exactly what the unified assets write (until those assets exist, tests build their tables here)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import polars as pl
import pytest

from checks.unified import MODEL

DEFAULTS: dict[str, Any] = {"active": True, "status": "OPEN", "currency": "GBP", "position": 0}


def unified(table: str, rows: list[dict[str, Any]], *, validate: bool = True) -> pl.DataFrame:
    """Rows of a unified table with every contract column (missing ones null, or a sensible default), money as
    Decimal, validated by the table's Pandera contract (`validate=False` for rows a contract would reject: the
    checks must catch them when a writer did not validate)."""
    schema = MODEL[table]
    columns = {name: column.dtype.type for name, column in schema.columns.items()}
    filled = []
    for row in rows:
        record = {name: row.get(name, DEFAULTS.get(name) if name in DEFAULTS and not schema.columns[name].nullable
                                else None) for name in columns}
        for name, value in record.items():
            if isinstance(value, (int, float, str)) and columns[name] == pl.Decimal(38, 9) and value is not None:
                record[name] = Decimal(str(value))
        unknown = set(row) - set(columns)
        assert not unknown, f"{table}: not in the contract: {unknown}"
        filled.append(record)
    frame = pl.DataFrame(filled, schema=columns, orient="row")
    return schema.validate(frame) if validate else frame


@pytest.fixture
def make():
    return unified
