"""The pure Raft core: one RaftNode per group member, driven through numbered Readies."""

from broker.core.raft.config import RaftConfig
from broker.core.raft.errors import DropReason, ProposalDropped
from broker.core.raft.node import RaftNode
from broker.core.raft.progress import CatchUpBudget
from broker.core.raft.storage import (
    InitialState,
    LogCompacted,
    LogStorage,
    LogUnavailable,
    MemoryStorage,
    SnapshotTemporarilyUnavailable,
)
from broker.core.raft.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    MemberId,
    Message,
    RandomSource,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)

__all__ = [
    "CatchUpBudget",
    "ConfChange",
    "ConfChangeKind",
    "ConfState",
    "DropReason",
    "Entry",
    "EntryKind",
    "HardState",
    "InitialState",
    "LogCompacted",
    "LogStorage",
    "LogUnavailable",
    "MemberId",
    "MemoryStorage",
    "Message",
    "ProposalDropped",
    "RaftConfig",
    "RaftNode",
    "RandomSource",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SnapshotTemporarilyUnavailable",
    "SoftState",
]
