"""Typed rows: a frozen dataclass whose field names are column names, loaded by one helper.

A daemon that reads rows declares what it reads as a dataclass (in :mod:`act.atlas.queries`
or :mod:`act.engine.queries`); :func:`columns_of` turns it into the columns of a ``SELECT``, a
field named like a column of the table reading that column, and a field given in ``labelled``
reading that expression (a joined table's column, a computed value) under the field's name.
:func:`fetch` runs the statement and returns instances, so mypy checks every attribute a daemon
uses, and tests/test_rows.py checks that every field of every row type names a real column.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

#: A row type: a frozen dataclass, built by keyword from a row's columns.
R = TypeVar("R")

#: What each row type reads: its table and its labelled columns (for tests/test_rows.py).
REGISTERED: dict[type[Any], tuple[sa.Table, tuple[str, ...]]] = {}


def row_type(table: sa.Table, *, labelled: tuple[str, ...] = ()) -> Callable[[type[R]], type[R]]:
    """Class decorator: register a frozen dataclass as rows of ``table``; the fields listed in
    ``labelled`` are not ``table``'s columns and are given to :func:`columns_of` by the caller."""

    def register(cls: type[R]) -> type[R]:
        params = getattr(cls, "__dataclass_params__", None)
        if params is None or not params.frozen:
            raise TypeError(f"{cls.__name__}: a row type is a frozen dataclass")
        REGISTERED[cls] = (table, labelled)
        return cls

    return register


def field_names(cls: type[Any]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def columns_of(
    cls: type[Any],
    table: sa.FromClause,
    labelled: Mapping[str, sa.ColumnElement[Any]] | None = None,
) -> list[sa.ColumnElement[Any]]:
    """The columns to select for ``cls``, in field order: ``labelled[name]`` labelled ``name``
    when given, else ``table``'s column ``name`` (KeyError naming it if it has none)."""
    labelled = labelled or {}
    unknown = set(labelled) - set(field_names(cls))
    if unknown:
        raise KeyError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    columns: list[sa.ColumnElement[Any]] = []
    for name in field_names(cls):
        if name in labelled:
            columns.append(labelled[name].label(name))
        elif name in table.c:
            columns.append(table.c[name])
        else:
            raise KeyError(f"{cls.__name__}.{name}: no such column in {table}")
    return columns


def select_of(
    cls: type[Any],
    table: sa.FromClause,
    labelled: Mapping[str, sa.ColumnElement[Any]] | None = None,
) -> sa.Select[Any]:
    """``SELECT`` exactly ``cls``'s fields (see :func:`columns_of`)."""
    return sa.select(*columns_of(cls, table, labelled))


def fetch(conn: Connection, cls: type[R], stmt: sa.Select[Any]) -> list[R]:
    """Run ``stmt`` (made by :func:`select_of` for ``cls``) and return its rows as ``cls``."""
    return [cls(**row) for row in conn.execute(stmt).mappings()]
