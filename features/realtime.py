"""Real-time path: new events -> the affected customers' online features, by the batch definitions.

After events land in the store, each affected customer's features are recomputed from
that customer's full history with cutoff = now (the same SQL as the batch build) and
written to the online view. Between refreshes the aging features (days since ...,
tenure) are moved forward at read time; windowed counts stay as of the last refresh.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from core.settings import Settings
from features.events.store import EventStore


@functools.lru_cache(maxsize=8)
def _event_store(root: Path) -> EventStore:
    """One EventStore per events folder for the process: its cached file index then outlives a
    request (the API calls `customer_history` on every `POST /v1/events`)."""
    return EventStore(root)


def customer_history(settings: Settings, customer_ids: Sequence[str]) -> pd.DataFrame:
    """Every stored event of these customers, in the contract.

    Reads only the files the store's customer index points to (see `EventStore.read_customers`).
    """
    return pd.DataFrame(_event_store(Path(settings.events_dir)).read_customers(customer_ids).to_pandas())


def refresh_online(
    customer_ids: Sequence[str], *, settings: Settings | None = None, store: Any = None, now: pd.Timestamp | None = None
) -> int:
    """Recompute and push the online features of these customers. Returns rows pushed."""
    from core.settings import get_settings
    from features.journeys import compute_features
    from features.online import open_store, push_features

    settings = settings or get_settings()
    now = now if now is not None else pd.Timestamp.now(tz="UTC").floor("s")
    history = customer_history(settings, customer_ids)
    if history.empty:
        return 0
    # the customers table too, as the batch build reads it: first_seen (tenure) and the email_opt_in fallback
    customers = settings.customers_path if settings.customers_path.exists() else None
    frame = compute_features(history, [now], customers=customers)
    store = store if store is not None else open_store(settings)
    return push_features(store, frame)
