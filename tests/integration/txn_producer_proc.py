"""A transactional producer as its own process, for the tracing test: it commits one
transaction of `COUNT` records to `TOPIC` and exits 0, its client spans exported as the
standard OTEL_* variables say (the same installation the CLI uses).

`python -m tests.integration.txn_producer_proc BOOTSTRAP TOPIC TRANSACTIONAL_ID COUNT`
"""

from __future__ import annotations

import sys

import trio

from broker.app import install_client_tracing
from consumers import Producer


async def main(bootstrap: str, topic: str, txn_id: str, count: int) -> None:
    async with Producer(bootstrap, transactional_id=txn_id) as p, p.transaction():
        for i in range(count):
            await p.send(topic, f"txn-{i}".encode())


if __name__ == "__main__":
    flush = install_client_tracing("txn-app")
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
    flush()
