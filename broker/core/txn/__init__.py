"""Transactions: the coordinator's state machine and driver, and the participants' ledger."""
