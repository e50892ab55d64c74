"""The counters of one run (`Stats`), which every part of the run writes to: frames sent,
answers and peer frames received, events, anomalies (by class, with a few examples), the
probe's latencies and the broker's and the fuzzer's own resource samples. Bounded however
long the run: counts, EXAMPLES_PER_CLASS examples per class, a reservoir sample of probe
latencies."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

LATENCY_SAMPLES = 10_000
_reservoir = random.Random(0)
EXAMPLES_PER_CLASS = 3


@dataclass
class Stats:
    """Counters of one run, bounded however long it runs: counts, EXAMPLES_PER_CLASS
    examples per anomaly class, a sample of at most LATENCY_SAMPLES probe latencies."""

    sent: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    peer_received: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    anomalies: Counter[str] = field(default_factory=Counter)
    """Per class (see `anomaly`)."""
    examples: dict[str, list[str]] = field(default_factory=dict)
    probe_latencies: list[float] = field(default_factory=list)
    probe_answers: int = 0
    probe_max: float = 0.0
    live_acked: int = 0
    live_failed: int = 0
    rss_baseline: int = 0
    rss_peak: int = 0
    fds_baseline: int = 0
    fds_peak: int = 0
    sockets_baseline: int = 0
    cpu_s: float = 0.0
    sent_digest: str = ""
    fuzzer_cpu_s: float = 0.0
    fuzzer_rss_start: int = 0
    fuzzer_rss_end: int = 0

    def probe_sample(self, latency: float) -> None:
        """One probe answer (a reservoir sample keeps the percentiles honest)."""
        self.probe_answers += 1
        self.probe_max = max(self.probe_max, latency)
        if len(self.probe_latencies) < LATENCY_SAMPLES:
            self.probe_latencies.append(latency)
        else:
            i = _reservoir.randrange(self.probe_answers)
            if i < LATENCY_SAMPLES:
                self.probe_latencies[i] = latency

    def anomaly(self, cls: str, text: str) -> None:
        """Record something the broker did that it must not: `cls` names the kind (what
        `Options.allow` tolerates), `text` one instance (the first few are kept)."""
        self.anomalies[cls] += 1
        kept = self.examples.setdefault(cls, [])
        if len(kept) < EXAMPLES_PER_CLASS:
            kept.append(text)
