"""Which channel serves a request: the model catalog and channel choice."""

from tokenmux.routing.catalog import Catalog, ModelEntry, Route

__all__ = ["Catalog", "ModelEntry", "Route"]
