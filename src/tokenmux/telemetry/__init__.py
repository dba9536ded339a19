"""What the gateway tells its operators' monitoring: Prometheus metrics (metrics.py) and, when
configured, OpenTelemetry traces (traces.py), both made from the ledger's rows off the request
path."""

from __future__ import annotations

import logging
from typing import Any

from tokenmux.config import Config
from tokenmux.ledger.store import Meter
from tokenmux.routing import Catalog
from tokenmux.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


class Telemetry:
    """The metrics (None when `metrics.access` is off) and the traces (None without `otel:`)."""

    def __init__(self, config: Config, catalog: Catalog):
        self.metrics = None if config.metrics.access == "off" else Metrics(catalog)
        self.traces: Any = None
        self._failed = False  # logged once
        if config.otel is not None:
            from tokenmux.telemetry.traces import Traces  # only then is OpenTelemetry loaded

            self.traces = Traces(config)

    def meter(self) -> Meter | None:
        """What the ledger hands each row to, once (None: nobody wants rows)."""
        if self.metrics is None and self.traces is None:
            return None
        return self.observe

    def observe(self, records: list[dict[str, Any]]) -> None:
        # In the ledger's thread: a fault here must never keep a row from the database.
        try:
            if self.metrics is not None:
                self.metrics.observe(records)
            if self.traces is not None:
                self.traces.observe(records)
        except Exception:
            if not self._failed:
                log.exception("telemetry: rows could not be metered; the ledger goes on")
            self._failed = True

    def close(self) -> None:
        if self.traces is not None:
            self.traces.close()


__all__ = ["Metrics", "Telemetry"]
