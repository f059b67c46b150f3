"""Mapping files: how a foreign table (transactions, clickstream, events) becomes contract events.

A mapping is YAML. Example for a transaction log::

    kind: transactions            # events | clickstream | transactions
    columns:                      # contract field -> source column name (or 0-based position)
      customer_id: CustomerID
      event_time: InvoiceDate
    time: {format: "%d/%m/%Y %H:%M", timezone: Europe/London}   # or yyyymmdd, epoch_s, epoch_ms, iso
    constants: {channel: web}
    transactions: {order_id: InvoiceNo, quantity: Quantity, unit_price: UnitPrice, cancel_prefix: C}
    properties: [Country]

See docs/mappings.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from core.contract import CHANNELS, EVENT_TYPE_STAGE

KINDS = ("events", "clickstream", "transactions")
CONTRACT_FIELDS = (
    "event_id",
    "customer_id",
    "event_time",
    "event_type",
    "channel",
    "session_id",
    "value",
    "properties",
)


class MappingError(ValueError):
    """The mapping file itself is wrong (not the data)."""


@dataclass
class Mapping:
    kind: str = "events"
    columns: dict[str, str | int] = field(default_factory=dict)
    time_format: str | None = None
    timezone: str = "UTC"
    constants: dict[str, Any] = field(default_factory=dict)
    event_map: dict[str, str | None] = field(default_factory=dict)
    channel_map: dict[str, str] = field(default_factory=dict)
    properties: list[str] = field(default_factory=list)
    transactions: dict[str, Any] = field(default_factory=dict)
    delimiter: str | None = None
    header: bool | None = None

    @classmethod
    def load(cls, path: str | Path) -> Mapping:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise MappingError(f"mapping file not found: {path}") from exc
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise MappingError(f"mapping file is not valid YAML: {path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise MappingError(f"mapping file must be a YAML mapping: {path}")
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Mapping:
        known = {
            "kind",
            "columns",
            "time",
            "constants",
            "event_map",
            "channel_map",
            "properties",
            "transactions",
            "format",
        }
        unknown = set(raw) - known
        if unknown:
            raise MappingError(f"unknown mapping keys: {sorted(unknown)} (known: {sorted(known)})")
        kind = raw.get("kind", "events")
        if kind not in KINDS:
            raise MappingError(f"kind must be one of {KINDS}, not {kind!r}")
        columns = raw.get("columns") or {}
        if not isinstance(columns, dict) or any(k not in CONTRACT_FIELDS for k in columns):
            raise MappingError(f"columns must map contract fields {CONTRACT_FIELDS} to source columns")
        time = raw.get("time") or {}
        fmt = raw.get("format") or {}
        event_map = raw.get("event_map") or {}
        for src, dst in event_map.items():
            if dst is not None and dst not in EVENT_TYPE_STAGE:
                raise MappingError(f"event_map: {src!r} -> {dst!r} is not an event type of the contract")
        channel_map = raw.get("channel_map") or {}
        for src, dst in channel_map.items():
            if dst not in CHANNELS:
                raise MappingError(f"channel_map: {src!r} -> {dst!r} is not a channel ({', '.join(CHANNELS)})")
        constants = raw.get("constants") or {}
        if "channel" in constants and constants["channel"] not in CHANNELS:
            raise MappingError(f"constants.channel {constants['channel']!r} is not a channel")
        txn = raw.get("transactions") or {}
        if kind == "transactions":
            if "amount" not in txn and not ("quantity" in txn and "unit_price" in txn):
                raise MappingError("transactions need `amount`, or `quantity` and `unit_price`")
        for need in ("customer_id", "event_time"):
            if need not in columns:
                raise MappingError(f"columns.{need} is required")
        if kind == "clickstream" and "event_type" not in columns:
            raise MappingError("a clickstream mapping needs columns.event_type (the event name column)")
        return cls(
            kind=kind,
            columns=dict(columns),
            time_format=time.get("format"),
            timezone=time.get("timezone", "UTC"),
            constants=dict(constants),
            event_map=dict(event_map),
            channel_map={str(k): v for k, v in channel_map.items()},
            properties=list(raw.get("properties") or []),
            transactions=dict(txn),
            delimiter=fmt.get("delimiter"),
            header=fmt.get("header"),
        )

    def positional_names(self) -> list[str] | None:
        """Column names for a headerless file, when the mapping gives positions."""
        positions = {v: k for k, v in self.columns.items() if isinstance(v, int)}
        for key in ("order_id", "amount", "quantity", "unit_price"):
            if isinstance(self.transactions.get(key), int):
                positions[self.transactions[key]] = f"__{key}"
        if not positions:
            return None
        width = max(positions) + 1
        return [positions.get(i, f"col{i}") for i in range(width)]

    def source(self, frame: pd.DataFrame, name: str | int) -> pd.Series:
        if isinstance(name, int):
            names = self.positional_names() or []
            key = names[name] if name < len(names) else f"col{name}"
            return frame[key]
        if name not in frame.columns:
            raise MappingError(f"source column {name!r} not in the file (columns: {list(frame.columns)[:20]})")
        return frame[name]

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rename/convert a raw chunk to contract columns (still unvalidated). Keeps `_row`."""
        out = pd.DataFrame({"_row": frame["_row"].to_numpy()}, index=frame.index)
        for fld, src in self.columns.items():
            out[fld] = self.source(frame, src).to_numpy()
        for fld, value in self.constants.items():
            if fld not in out.columns:
                out[fld] = value
        if self.kind == "clickstream" or self.event_map:
            names = out["event_type"].astype("string").str.strip()
            mapped = names.map(lambda n: self.event_map.get(n, n) if n is not pd.NA else None)
            out["event_type"] = mapped.astype(object)
            out["_dropped"] = names.isin([k for k, v in self.event_map.items() if v is None]).to_numpy()
        if self.channel_map and "channel" in out.columns:
            out["channel"] = out["channel"].map(lambda c: self.channel_map.get(str(c), c))
        if self.properties:
            cols = {p: self.source(frame, p) for p in self.properties}
            props = pd.DataFrame(cols)
            out["properties"] = props.to_json(orient="records", lines=True, date_format="iso").splitlines()
        if self.kind == "transactions":
            t = self.transactions
            if "amount" in t:
                out["__amount"] = self.source(frame, t["amount"]).to_numpy()
            else:
                out["__quantity"] = self.source(frame, t["quantity"]).to_numpy()
                out["__unit_price"] = self.source(frame, t["unit_price"]).to_numpy()
            if "order_id" in t:
                out["__order_id"] = self.source(frame, t["order_id"]).to_numpy()
        return out
