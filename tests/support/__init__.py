"""Helpers every test suite may use (a suite never imports another suite): broker processes
and ports (`harness`), the `sluice` command as a child process (`sluice_cli`), waiting with a
deadline (`wait`), scripted fake brokers on local sockets (`fake_broker`), an in-memory fake
cluster behind the producer (`fake_cluster`), the acknowledged/read history checker
(`history`), an in-memory broker harness over the sans-IO core (`broker_harness`), writing a
Ready to an in-memory disk (`ready`), one-operation writes to a RocksDB group
(`store_helpers`)."""
