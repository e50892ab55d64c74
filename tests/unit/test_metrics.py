"""BrokerMetrics on its own: requests counted per API and error, latency buckets, scrape-time
samples, and two registries that never mix (two embedded brokers in one process)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from broker.runtime.metrics import BrokerMetrics, NodeCollector


def samples(m: BrokerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.render()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_requests_are_counted_per_api_and_error_and_timed_per_api() -> None:
    m = BrokerMetrics()
    m.request_answered("fetch", "NONE", 0.002)
    m.request_answered("fetch", "NONE", 0.2)
    m.request_answered("fetch", "NOT_LEADER_OR_FOLLOWER", 0.0004)
    got = samples(m)
    assert got[("sluice_requests_total", (("api", "fetch"), ("error", "NONE")))] == 2
    err = ("error", "NOT_LEADER_OR_FOLLOWER")
    assert got[("sluice_requests_total", (("api", "fetch"), err))] == 1
    fetch = (("api", "fetch"),)
    assert got[("sluice_request_duration_seconds_count", fetch)] == 3
    assert (
        got[("sluice_request_duration_seconds_bucket", (("api", "fetch"), ("le", "0.0005")))] == 1
    )
    assert (
        got[("sluice_request_duration_seconds_bucket", (("api", "fetch"), ("le", "0.0025")))] == 2
    )
    assert abs(got[("sluice_request_duration_seconds_sum", fetch)] - 0.2024) < 1e-9


def test_scrape_time_samples_are_read_at_each_scrape_and_registries_do_not_mix() -> None:
    level = [3.0]
    a, b = BrokerMetrics(), BrokerMetrics()
    a.add(NodeCollector(lambda: [("gauge", "sluice_x", "x", [((), level[0])], ())]))
    assert samples(a)[("sluice_x", ())] == 3
    level[0] = 5.0
    assert samples(a)[("sluice_x", ())] == 5
    assert ("sluice_x", ()) not in samples(b)
    a.add(NodeCollector(lambda: [("counter", "sluice_y", "y", [(("r",), 7.0)], ("kind",))]))
    assert samples(a)[("sluice_y_total", (("kind", "r"),))] == 7
