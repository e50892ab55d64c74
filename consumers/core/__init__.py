"""The client library's pure core: every decision the Producer and Consumer take, no I/O.

No module here imports trio, a clock, randomness, sockets or the OS (tests/layering.py
enforces it): time comes in as numbers (seconds on the caller's clock), randomness through an
injected source, and answers as `broker.wire` messages. The Trio shells (`consumers.producer`,
`consumers.consumer`, `consumers.cluster`) do the I/O and call these objects; the cluster
simulator (tests/sim/cluster_clients.py) drives the very same objects over simulated brokers.

    metadata     MetadataCache: brokers, controller, partition leaders (never an older term)
    refresh      Backoff, the metadata-refresh policy both clients share, needs_metadata
    accumulator  records -> per-partition batches (linger, size, sticky partitions)
    producer     ProducerCore: routing, sequencing, in-flight limits, retries, epoch bumps,
                 delivery timeouts, produce requests and what each answer does
    positions    Positions: the consumer's fetch positions, resets, fetch answers, buffers
"""
