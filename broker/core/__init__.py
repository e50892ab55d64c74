"""Pure, deterministic state machines (Raft, partitions, groups, transactions); no I/O."""
