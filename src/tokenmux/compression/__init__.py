"""Context compression: a long conversation's older turns summarised (or dropped) before it goes
upstream, with the summary kept for the turns that follow."""

from tokenmux.compression.cache import MemorySummaries, RedisSummaries, SummaryCache
from tokenmux.compression.compress import Job, Result, compress
from tokenmux.compression.settings import Headers, Settings, resolve

__all__ = ["Headers", "Job", "MemorySummaries", "RedisSummaries", "Result", "Settings",
           "SummaryCache", "compress", "resolve"]
