"""The request/response envelope: whole frames in, typed messages out (and back).

A request payload is the CBOR array `[api_key, api_version, correlation_id, client_id, body]`
and a response payload `[correlation_id, error_code, error_message, body]`, where a
request-level error has a null body and success a map. Correlation ids are int32, chosen by
the client, and echoed by the server; responses on one connection may arrive in any order.

Errors while decoding a request are WireError values: INVALID_FRAME (not strict CBOR),
INVALID_REQUEST (a bad envelope or body field, named by its path), UNSUPPORTED_VERSION (a
version outside the broker's range for that API: the message names the API, the version asked
and the range), INVALID_REQUIRED_ACKS. When the correlation id could be read (even from a
payload whose body is not valid CBOR: the envelope's first items are read on their own), the
error carries it and the server answers with an error response; otherwise it closes the
connection.

Versions: a body is written and read at the request's `api_version`, its response at the same
version. The one exception is Kafka's rule for API_VERSIONS: a request at a version outside
the broker's range decodes without its body (a newer version's body is unknown here) and is
answered UNSUPPORTED_VERSION *with* a body at version 0, listing the broker's ranges, so a
newer client can downgrade; every other error answer has a null body.

A client finds which API a response answers from its correlation id: `response_correlation_id`
reads it without decoding the rest, then `decode_response(payload, api_key, api_version=v)`
decodes (v: the version the request was sent at).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple, NoReturn

from broker.wire import cbor, schema
from broker.wire.api import SUPPORTED_VERSIONS, ApiKey, VersionRange
from broker.wire.errors import MAX_ERROR_MESSAGE, ErrorCode, WireError, short_message
from broker.wire.frames import encode_frame
from broker.wire.group_messages import (
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    GroupHeartbeatRequest,
    GroupHeartbeatResponse,
    ListGroupsRequest,
    ListGroupsResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
)
from broker.wire.limits import DEFAULT_LIMITS, INT32_MAX, INT32_MIN, Limits, client_id_problem
from broker.wire.messages import (
    ApiVersionsRequest,
    ApiVersionsResponse,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    DescribeClusterRequest,
    DescribeClusterResponse,
    ElectLeadersRequest,
    ElectLeadersResponse,
    FetchRequest,
    FetchResponse,
    InitProducerIdRequest,
    InitProducerIdResponse,
    ListOffsetsRequest,
    ListOffsetsResponse,
    MetadataRequest,
    MetadataResponse,
    ProduceRequest,
    ProduceResponse,
    Request,
    Response,
)
from broker.wire.rebalance_messages import (
    AlterTopicRequest,
    AlterTopicResponse,
    DescribeReassignmentsRequest,
    DescribeReassignmentsResponse,
    RebalanceRequest,
    RebalanceResponse,
)
from broker.wire.txn_messages import (
    AbortTransactionRequest,
    AbortTransactionResponse,
    AddOffsetsToTxnRequest,
    AddOffsetsToTxnResponse,
    AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse,
    DescribeTransactionsRequest,
    DescribeTransactionsResponse,
    EndTxnRequest,
    EndTxnResponse,
    ListTransactionsRequest,
    ListTransactionsResponse,
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
)

__all__ = [
    "MAX_ERROR_MESSAGE",
    "REQUEST_TYPES",
    "RESPONSE_TYPES",
    "RequestHeader",
    "ResponseEnvelope",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "request_correlation_id",
    "response_correlation_id",
]

REQUEST_TYPES: Mapping[ApiKey, type[Request]] = {
    ApiKey.API_VERSIONS: ApiVersionsRequest,
    ApiKey.METADATA: MetadataRequest,
    ApiKey.CREATE_TOPICS: CreateTopicsRequest,
    ApiKey.DELETE_TOPICS: DeleteTopicsRequest,
    ApiKey.PRODUCE: ProduceRequest,
    ApiKey.FETCH: FetchRequest,
    ApiKey.LIST_OFFSETS: ListOffsetsRequest,
    ApiKey.INIT_PRODUCER_ID: InitProducerIdRequest,
    ApiKey.DESCRIBE_CLUSTER: DescribeClusterRequest,
    ApiKey.FIND_COORDINATOR: FindCoordinatorRequest,
    ApiKey.GROUP_HEARTBEAT: GroupHeartbeatRequest,
    ApiKey.OFFSET_COMMIT: OffsetCommitRequest,
    ApiKey.OFFSET_FETCH: OffsetFetchRequest,
    ApiKey.LIST_GROUPS: ListGroupsRequest,
    ApiKey.DESCRIBE_GROUPS: DescribeGroupsRequest,
    ApiKey.DELETE_GROUPS: DeleteGroupsRequest,
    ApiKey.ADD_PARTITIONS_TO_TXN: AddPartitionsToTxnRequest,
    ApiKey.ADD_OFFSETS_TO_TXN: AddOffsetsToTxnRequest,
    ApiKey.TXN_OFFSET_COMMIT: TxnOffsetCommitRequest,
    ApiKey.END_TXN: EndTxnRequest,
    ApiKey.DESCRIBE_TRANSACTIONS: DescribeTransactionsRequest,
    ApiKey.LIST_TRANSACTIONS: ListTransactionsRequest,
    ApiKey.ABORT_TRANSACTION: AbortTransactionRequest,
    ApiKey.ELECT_LEADERS: ElectLeadersRequest,
    ApiKey.REBALANCE: RebalanceRequest,
    ApiKey.DESCRIBE_REASSIGNMENTS: DescribeReassignmentsRequest,
    ApiKey.ALTER_TOPIC: AlterTopicRequest,
}

RESPONSE_TYPES: Mapping[ApiKey, type[Response]] = {
    ApiKey.API_VERSIONS: ApiVersionsResponse,
    ApiKey.METADATA: MetadataResponse,
    ApiKey.CREATE_TOPICS: CreateTopicsResponse,
    ApiKey.DELETE_TOPICS: DeleteTopicsResponse,
    ApiKey.PRODUCE: ProduceResponse,
    ApiKey.FETCH: FetchResponse,
    ApiKey.LIST_OFFSETS: ListOffsetsResponse,
    ApiKey.INIT_PRODUCER_ID: InitProducerIdResponse,
    ApiKey.DESCRIBE_CLUSTER: DescribeClusterResponse,
    ApiKey.FIND_COORDINATOR: FindCoordinatorResponse,
    ApiKey.GROUP_HEARTBEAT: GroupHeartbeatResponse,
    ApiKey.OFFSET_COMMIT: OffsetCommitResponse,
    ApiKey.OFFSET_FETCH: OffsetFetchResponse,
    ApiKey.LIST_GROUPS: ListGroupsResponse,
    ApiKey.DESCRIBE_GROUPS: DescribeGroupsResponse,
    ApiKey.DELETE_GROUPS: DeleteGroupsResponse,
    ApiKey.ADD_PARTITIONS_TO_TXN: AddPartitionsToTxnResponse,
    ApiKey.ADD_OFFSETS_TO_TXN: AddOffsetsToTxnResponse,
    ApiKey.TXN_OFFSET_COMMIT: TxnOffsetCommitResponse,
    ApiKey.END_TXN: EndTxnResponse,
    ApiKey.DESCRIBE_TRANSACTIONS: DescribeTransactionsResponse,
    ApiKey.LIST_TRANSACTIONS: ListTransactionsResponse,
    ApiKey.ABORT_TRANSACTION: AbortTransactionResponse,
    ApiKey.ELECT_LEADERS: ElectLeadersResponse,
    ApiKey.REBALANCE: RebalanceResponse,
    ApiKey.DESCRIBE_REASSIGNMENTS: DescribeReassignmentsResponse,
    ApiKey.ALTER_TOPIC: AlterTopicResponse,
}
assert set(REQUEST_TYPES) == set(RESPONSE_TYPES) == set(ApiKey)
assert all(t.API_KEY is k for k, t in REQUEST_TYPES.items())
assert all(t.API_KEY is k for k, t in RESPONSE_TYPES.items())


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestHeader:
    api_key: ApiKey
    api_version: int
    correlation_id: int
    client_id: str | None


class ResponseEnvelope(NamedTuple):
    """What `decode_response` returns: (correlation_id, error, message, body)."""

    correlation_id: int
    error: ErrorCode
    message: str | None
    body: Response | None


def _check_correlation_id(correlation_id: int) -> None:
    if type(correlation_id) is not int or not INT32_MIN <= correlation_id <= INT32_MAX:
        raise ValueError(f"correlation_id must be an int32, got {correlation_id!r}")


def _check_version(api_key: ApiKey, api_version: int) -> None:
    low, high = SUPPORTED_VERSIONS[api_key]
    if not low <= api_version <= high:
        raise ValueError(f"{api_key.name} version {api_version} is not in [{low}, {high}]")


def _refusal_with_ranges(api_key: ApiKey, error: ErrorCode) -> bool:
    """An answer that carries a body although its error is not NONE (at version 0)."""
    return api_key is ApiKey.API_VERSIONS and error is ErrorCode.UNSUPPORTED_VERSION


def encode_request(
    request: Request, correlation_id: int, client_id: str | None, *, api_version: int = 0
) -> bytes:
    """The whole frame (length prefix included) carrying `request` at `api_version`."""
    _check_correlation_id(correlation_id)
    _check_version(request.API_KEY, api_version)
    payload = cbor.encode(
        [int(request.API_KEY), api_version, correlation_id, client_id, request.to_body(api_version)]
    )
    return encode_frame(payload)


def encode_response(
    correlation_id: int,
    error: ErrorCode,
    message: str | None,
    response: Response | None,
    *,
    api_version: int = 0,
) -> bytes:
    """The whole frame carrying a response at `api_version` (the request's): a body on
    success, None with an error, except the API_VERSIONS refusal, whose body (the ranges) is
    written at version 0. A message is cut to MAX_ERROR_MESSAGE characters (any client's
    text limit holds it), as every per-topic and per-partition message is."""
    _check_correlation_id(correlation_id)
    body = None
    if response is None:
        if error is ErrorCode.NONE:
            raise ValueError("a response with error NONE carries a body")
    elif error is ErrorCode.NONE:
        _check_version(response.API_KEY, api_version)
        body = response.to_body(api_version)
    elif _refusal_with_ranges(response.API_KEY, error):
        body = response.to_body(0)
    else:
        raise ValueError(f"a {error.name} response carries no body")
    message = short_message(message)
    return encode_frame(cbor.encode([correlation_id, int(error), message, body]))


# --------------------------------------------------------------------------- correlation ids

_HEAD_SIZES = {24: 1, 25: 2, 26: 4, 27: 8}
_UINT = {size: struct.Struct(">" + code) for size, code in ((1, "B"), (2, "H"), (4, "I"), (8, "Q"))}


def _read_int(buf: bytes, pos: int) -> tuple[int, int] | None:
    """The CBOR integer at `pos` and the offset after it, or None if there is none."""
    if pos >= len(buf):
        return None
    ib = buf[pos]
    major, info = ib >> 5, ib & 0x1F
    if major > 1:
        return None
    if info < 24:
        arg, end = info, pos + 1
    elif info in _HEAD_SIZES:
        size = _HEAD_SIZES[info]
        end = pos + 1 + size
        if end > len(buf):
            return None
        arg = _UINT[size].unpack_from(buf, pos + 1)[0]
    else:
        return None
    return (arg if major == 0 else -1 - arg), end


def _peek(payload: bytes | bytearray | memoryview, index: int) -> int | None:
    """Item `index` of a payload that starts as a short CBOR array of integers, if it is an
    int32; None otherwise."""
    buf = bytes(payload[:64])
    if not buf or buf[0] >> 5 != 4 or not index < buf[0] & 0x1F < 24:
        return None
    pos = 1
    value: int | None = None
    for _ in range(index + 1):
        read = _read_int(buf, pos)
        if read is None:
            return None
        value, pos = read
    if value is None or not INT32_MIN <= value <= INT32_MAX:
        return None
    return value


def request_correlation_id(payload: bytes | bytearray | memoryview) -> int | None:
    """The correlation id of a request payload, read without decoding the rest; None when the
    payload does not start as an array `[int, int, int32, ...]`."""
    return _peek(payload, 2)


def response_correlation_id(payload: bytes | bytearray | memoryview) -> int | None:
    """The correlation id of a response payload, read without decoding the rest."""
    return _peek(payload, 0)


# --------------------------------------------------------------------------- decoding


def decode_request(
    payload: bytes | bytearray | memoryview,
    limits: Limits = DEFAULT_LIMITS,
    versions: Mapping[ApiKey, VersionRange] = SUPPORTED_VERSIONS,
) -> tuple[RequestHeader, Request]:
    """Decode and validate a request payload (a frame without its length prefix) against the
    version ranges the broker serves (`versions`, within SUPPORTED_VERSIONS). An API_VERSIONS
    request outside its range is returned, body unread, with the version it asked for: its
    handler answers the refusal with the ranges."""
    correlation_id = request_correlation_id(payload)

    def reject(code: ErrorCode, message: str) -> NoReturn:
        raise WireError(code, message, correlation_id=correlation_id)

    try:
        envelope = cbor.decode(payload, limits)
    except WireError as exc:
        reject(exc.code, exc.message)
    if type(envelope) is not list or len(envelope) != 5:
        reject(
            ErrorCode.INVALID_REQUEST,
            "request: expected [api_key, api_version, correlation_id, client_id, body]",
        )
    raw_key, api_version, raw_correlation_id, client_id, body = envelope
    try:
        correlation_id = schema.int32(raw_correlation_id, "correlation_id")
        raw_key = schema.int16(raw_key, "api_key")
        api_version = schema.int16(api_version, "api_version")
        client_id = schema.opt_text(client_id, "client_id")
    except WireError as exc:
        reject(exc.code, exc.message)
    if client_id is not None:
        problem = client_id_problem(client_id, limits)
        if problem is not None:
            reject(ErrorCode.INVALID_REQUEST, f"client_id: {problem}")
    try:
        api_key = ApiKey(raw_key)
    except ValueError:
        reject(ErrorCode.INVALID_REQUEST, f"api_key: unknown API {raw_key}")
    low, high = versions[api_key]
    request: Request
    if low <= api_version <= high:
        try:
            request = REQUEST_TYPES[api_key].from_body(body, api_version, limits)
        except WireError as exc:
            reject(exc.code, exc.message)
    elif api_key is ApiKey.API_VERSIONS:
        request = ApiVersionsRequest()
    else:
        reject(
            ErrorCode.UNSUPPORTED_VERSION,
            f"api_version: {api_key.name} version {api_version} is not supported by this "
            f"broker, which speaks versions {low} to {high}",
        )
    header = RequestHeader(
        api_key=api_key,
        api_version=api_version,
        correlation_id=correlation_id,
        client_id=client_id,
    )
    return header, request


def decode_response(
    payload: bytes | bytearray | memoryview,
    api_key: ApiKey,
    limits: Limits = DEFAULT_LIMITS,
    *,
    api_version: int = 0,
) -> ResponseEnvelope:
    """Decode and validate a response payload answering a request of `api_key` sent at
    `api_version` (an API_VERSIONS refusal's body is read at version 0)."""
    _check_version(api_key, api_version)
    correlation_id = response_correlation_id(payload)

    def reject(code: ErrorCode, message: str) -> NoReturn:
        raise WireError(code, message, correlation_id=correlation_id)

    try:
        envelope = cbor.decode(payload, limits)
    except WireError as exc:
        reject(exc.code, exc.message)
    if type(envelope) is not list or len(envelope) != 4:
        reject(
            ErrorCode.INVALID_REQUEST,
            "response: expected [correlation_id, error_code, error_message, body]",
        )
    raw_correlation_id, raw_error, message, body = envelope
    try:
        correlation_id = schema.int32(raw_correlation_id, "correlation_id")
        error = schema.error_code(raw_error, "error_code")
        message = schema.opt_text(message, "error_message")
        response: Response | None = None
        if error is ErrorCode.NONE:
            response = RESPONSE_TYPES[api_key].from_body(body, api_version, limits)
        elif body is not None and _refusal_with_ranges(api_key, error):
            response = RESPONSE_TYPES[api_key].from_body(body, 0, limits)
        elif body is not None:
            schema.fail("body", "must be null when error_code is not NONE")
    except WireError as exc:
        reject(exc.code, exc.message)
    return ResponseEnvelope(
        correlation_id=correlation_id, error=error, message=message, body=response
    )
