"""Ledger anchoring: Merkle trees over Kafka batches, ledgers, receipts, verification."""
