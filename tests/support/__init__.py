"""Helpers every test suite may use (a suite never imports another suite): broker processes
and ports (`harness`), the acknowledged/read history checker (`history`), an in-memory broker
harness over the sans-IO core (`broker_harness`), one-operation writes to a RocksDB group
(`store_helpers`)."""
