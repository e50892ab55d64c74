"""TxnRequests: the transaction APIs of the RequestHandler (a mixin: it answers through the
handler's `_park` and reads the node's `txn_service` and `group_service`).

FIND_COORDINATOR (key type transaction), DESCRIBE_TRANSACTIONS and LIST_TRANSACTIONS answer
at once; INIT_PRODUCER_ID with a transactional id, ADD_PARTITIONS_TO_TXN, ADD_OFFSETS_TO_TXN,
END_TXN and ABORT_TRANSACTION answer once the coordinator's service completes them (see
TransactionService for when), TXN_OFFSET_COMMIT once the group coordinator's entry applied.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING

from broker.core.reply import Reply, coordinator_error
from broker.core.txn.coordinator import EndAnswer, InitAnswer, TxnEntry
from broker.core.txn.protocol import GROUP, Participant
from broker.wire.errors import ErrorCode
from broker.wire.group_messages import FindCoordinatorResponse
from broker.wire.messages import (
    InitProducerIdRequest,
    InitProducerIdResponse,
    Request,
    Response,
)
from broker.wire.protocol import RequestHeader
from broker.wire.txn_messages import (
    TXN_STATES,
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
    ListedTransaction,
    ListTransactionsRequest,
    ListTransactionsResponse,
    TransactionDescription,
    TxnParticipantInfo,
)

if TYPE_CHECKING:
    from broker.core.node import BrokerNode


class TxnRequests:
    node: BrokerNode

    @abstractmethod
    def _park(
        self, token: int, header: RequestHeader, req: Request, results: list[object]
    ) -> Reply | None: ...

    # -- answered at once -------------------------------------------------------------------

    def _find_txn_coordinator(self, corr: int, txn_id: str) -> Reply:
        err, msg, found = self.node.txn_service.find(txn_id)
        if found is None:
            return Reply(corr, err, msg, None)
        node_id, partition = found
        b = self.node.meta.brokers[node_id]
        body = FindCoordinatorResponse(node_id=b.id, host=b.host, port=b.port, partition=partition)
        return Reply(corr, ErrorCode.NONE, None, body)

    def _describe_transactions(self, req: DescribeTransactionsRequest) -> Response:
        out = []
        me = self.node.config.node_id
        for txn_id in req.transactional_ids:
            err, msg, t = self.node.txn_service.entry(txn_id)
            if t is None:
                out.append(TransactionDescription(transactional_id=txn_id, error=err, message=msg))
            else:
                out.append(_describe(t, me))
        return DescribeTransactionsResponse(transactions=tuple(out))

    def _list_transactions(self, req: ListTransactionsRequest) -> Response:
        wanted = set(req.states)
        out = [
            ListedTransaction(
                transactional_id=t.txn_id,
                producer_id=t.producer_id,
                state=_state(t),
                start_ms=t.started_ms,
                participants=len(t.participants),
            )
            for t in self.node.txn_service.entries()
            if not wanted or _state(t) in wanted
        ]
        return ListTransactionsResponse(transactions=tuple(out))

    # -- completed by the coordinator -------------------------------------------------------

    def _init_txn_producer(
        self, token: int, header: RequestHeader, req: InitProducerIdRequest
    ) -> Reply | None:
        assert req.transactional_id is not None
        now = self.node.txn_service.init(token, 0, req.transactional_id, req.transaction_timeout_ms)
        return self._park(token, header, req, [now])

    def _add_partitions_to_txn(
        self, token: int, header: RequestHeader, req: AddPartitionsToTxnRequest
    ) -> Reply | None:
        wanted = tuple(Participant(t.name, p) for t in req.topics for p in t.partitions)
        now = self.node.txn_service.add(
            token, 0, req.transactional_id, req.producer_id, req.producer_epoch, wanted
        )
        return self._park(token, header, req, [now])

    def _add_offsets_to_txn(
        self, token: int, header: RequestHeader, req: AddOffsetsToTxnRequest
    ) -> Reply | None:
        wanted = (Participant(req.group_id, GROUP),)
        now = self.node.txn_service.add(
            token, 0, req.transactional_id, req.producer_id, req.producer_epoch, wanted
        )
        return self._park(token, header, req, [now])

    def _end_txn(self, token: int, header: RequestHeader, req: EndTxnRequest) -> Reply | None:
        seqs = [(Participant(s.topic, s.partition), s.last_sequence) for s in req.sequences]
        now = self.node.txn_service.end(
            token, 0, req.transactional_id, req.producer_id, req.producer_epoch, req.commit, seqs
        )
        return self._park(token, header, req, [now])

    def _abort_transaction(
        self, token: int, header: RequestHeader, req: AbortTransactionRequest
    ) -> Reply | None:
        now = self.node.txn_service.abort(token, 0, req.transactional_id)
        return self._park(token, header, req, [now])

    # -- finishers --------------------------------------------------------------------------

    def _txn_done(self, corr: int, req: Request, results: list[object]) -> Reply:
        """The one result of a transaction request, as its response."""
        first = results[0]
        assert isinstance(first, tuple)
        err, msg, value = first
        if err != ErrorCode.NONE:
            return Reply(corr, coordinator_error(err), msg, None)
        if isinstance(req, InitProducerIdRequest):
            assert isinstance(value, InitAnswer)
            body: Response = InitProducerIdResponse(
                producer_id=value.producer_id, producer_epoch=value.epoch
            )
        elif isinstance(req, EndTxnRequest):
            assert isinstance(value, EndAnswer)
            body = EndTxnResponse(
                producer_id=value.producer_id, producer_epoch=value.epoch, reinit=value.reinit
            )
        elif isinstance(req, AddPartitionsToTxnRequest):
            body = AddPartitionsToTxnResponse()
        elif isinstance(req, AddOffsetsToTxnRequest):
            body = AddOffsetsToTxnResponse()
        else:
            body = AbortTransactionResponse()
        return Reply(corr, ErrorCode.NONE, None, body)


def _state(t: TxnEntry) -> str:
    return TXN_STATES[int(t.state)]


def _describe(t: TxnEntry, node_id: int) -> TransactionDescription:
    return TransactionDescription(
        transactional_id=t.txn_id,
        state=_state(t),
        producer_id=t.producer_id,
        producer_epoch=t.epoch,
        timeout_ms=t.timeout_ms,
        start_ms=t.started_ms,
        coordinator=node_id,
        participants=tuple(
            TxnParticipantInfo(name=p.name, partition=p.partition, last_sequence=seq)
            for p, seq in sorted(t.participants.items())
        ),
    )
