"""Key -> partition, pinned byte for byte so that every client (in any language) agrees.

- `default_partition(key, n)`: jump consistent hash (Lamping & Veach 2014, the C++ reference
  with its double arithmetic) of `blake2b(key, digest_size=8)` read as a big-endian unsigned
  64-bit integer. Growing n to n + 1 moves about 1/(n + 1) of the keys, all to the new
  partition. The same function places consumer groups and transactional ids on their
  coordinator partitions.
- `murmur2_partition(key, n)`: Kafka's `Utils.toPositive(Utils.murmur2(key)) % n`, for users
  migrating from Kafka who need their keys to land where Kafka's Java client put them.

Python's `hash()` is salted per process and is never used for placement.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "default_partition",
    "jump_hash",
    "key_hash64",
    "murmur2",
    "murmur2_partition",
]

_U64 = 0xFFFF_FFFF_FFFF_FFFF
_U32 = 0xFFFF_FFFF
_JUMP_MULTIPLIER = 2862933555777941757
_TWO_POW_31 = float(1 << 31)

_MURMUR_SEED = 0x9747B28C
_MURMUR_M = 0x5BD1E995
_MURMUR_R = 24


def _check_count(num_partitions: int) -> None:
    if not 1 <= num_partitions <= (1 << 31) - 1:
        raise ValueError(f"num_partitions must be in [1, 2**31 - 1], got {num_partitions}")


def jump_hash(key: int, num_buckets: int) -> int:
    """Lamping & Veach's jump consistent hash of an unsigned 64-bit key, exactly as their C++:

        int64_t b = -1, j = 0;
        while (j < num_buckets) {
            b = j;
            key = key * 2862933555777941757ULL + 1;
            j = (b + 1) * (double(1LL << 31) / double((key >> 33) + 1));
        }
        return b;

    Python floats are IEEE doubles and `int()` truncates like the C++ conversion, so the
    results are identical.
    """
    _check_count(num_buckets)
    if not 0 <= key <= _U64:
        raise ValueError("key must be an unsigned 64-bit integer")
    b = -1
    j = 0
    while j < num_buckets:
        b = j
        key = (key * _JUMP_MULTIPLIER + 1) & _U64
        j = int(float(b + 1) * (_TWO_POW_31 / float((key >> 33) + 1)))
    return b


Key = bytes | bytearray | memoryview


def key_hash64(key: Key) -> int:
    """The 64-bit placement hash of a key: blake2b with an 8-byte digest, big-endian."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def default_partition(key: Key, num_partitions: int) -> int:
    """Sluice's partition for `key` among `num_partitions` (jump hash of blake2b-64)."""
    return jump_hash(key_hash64(key), num_partitions)


def murmur2(data: Key) -> int:
    """Kafka's `Utils.murmur2` (a signed 32-bit result), with Java's int overflow and its
    fall-through tail handling."""
    data = bytes(data)  # a copy only when it is not bytes already
    length = len(data)
    m = _MURMUR_M
    h = (_MURMUR_SEED ^ length) & _U32
    end4 = length & ~3
    for i in range(0, end4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & _U32
        k ^= k >> _MURMUR_R
        k = (k * m) & _U32
        h = (h * m) & _U32
        h ^= k
    tail = length & 3
    if tail == 3:
        h ^= data[end4 + 2] << 16
    if tail >= 2:
        h ^= data[end4 + 1] << 8
    if tail >= 1:
        h ^= data[end4]
        h = (h * m) & _U32
    h ^= h >> 13
    h = (h * m) & _U32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x8000_0000 else h


def murmur2_partition(key: Key, num_partitions: int) -> int:
    """Kafka's default partition for a keyed record: `toPositive(murmur2(key)) % n`
    (toPositive masks the sign bit off; it is not abs())."""
    _check_count(num_partitions)
    return (murmur2(key) & 0x7FFF_FFFF) % num_partitions
