"""Anchoring to any EVM chain over JSON-RPC (Besu, Quorum, Ethereum; anvil in tests).

Each aggregate root is written as the calldata of a zero-value transaction from the anchoring
account to itself: ``MAGIC || hash algorithm id || root``. No contract to deploy, audit or
upgrade, the cheapest write (21,000 gas + calldata), and any node answers the verification
lookup (``eth_getTransactionByHash``) without an ABI. What a contract would add — an on-chain
index of roots — is kept locally by the anchorer (``index.jsonl`` in the state directory) so it
never anchors a batch twice.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import Web3
from web3.exceptions import TransactionNotFound
from web3.types import TxParams, Wei

from anchoring.errors import LedgerError, VerificationFailed
from anchoring.ledgers.base import Anchored
from schemas import AnchorRecord, LedgerRef, encode
from schemas.anchoring import HashAlgorithm

MAGIC = b"SPANCHR1"
HASH_IDS = {"blake3": b"\x01", "sha256": b"\x02"}
_RECEIPT_TIMEOUT_S = 120.0


def calldata(root: str, hash_alg: HashAlgorithm) -> bytes:
    return MAGIC + HASH_IDS[hash_alg] + bytes.fromhex(root)


class EvmLedger:
    kind = "evm"

    def __init__(self, rpc_url: str, *, private_key: str | None, confirmations: int,
                 index_path: Path) -> None:
        self._web3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 10}))
        self._rpc_url = rpc_url
        self._account = Account.from_key(private_key) if private_key else None
        self._confirmations = confirmations
        self._index_path = index_path
        try:
            self._chain_id = int(self._web3.eth.chain_id)
        except Exception as exc:
            raise LedgerError(f"cannot reach the EVM node at {rpc_url}: {exc}; is it up? "
                              "(`smartport stack status`)") from exc

    @property
    def ledger_id(self) -> str:
        return f"eip155:{self._chain_id}"

    def _index(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(line) for line in self._index_path.read_text().splitlines()]
        except FileNotFoundError:
            return []

    def find(self, batch_prefix: str) -> list[AnchorRecord] | None:
        for entry in self._index():
            if entry["chain_id"] == self._chain_id and any(
                    batch.startswith(batch_prefix) for batch in entry["batches"]):
                return [AnchorRecord.model_validate_json(json.dumps(r))
                        for r in entry["records"]]
        return None

    def anchor(self, root: str, hash_alg: HashAlgorithm, batches: Anchored) -> LedgerRef:
        if self._account is None:
            raise LedgerError("this ledger was opened without a signing key")
        address = self._account.address
        tx: TxParams = {
            "from": address,
            "to": address,
            "value": Wei(0),
            "data": calldata(root, hash_alg),
            "nonce": self._web3.eth.get_transaction_count(address, "pending"),
            "chainId": self._chain_id,
            "gasPrice": self._web3.eth.gas_price,
        }
        tx["gas"] = self._web3.eth.estimate_gas(tx)
        signed = self._account.sign_transaction(tx)
        tx_hash = self._web3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = self._web3.eth.wait_for_transaction_receipt(tx_hash, timeout=_RECEIPT_TIMEOUT_S)
        if receipt["status"] != 1:
            raise LedgerError(f"anchor transaction {tx_hash.hex()} failed on {self.ledger_id}")
        self._wait_confirmations(receipt["blockNumber"])
        ref = LedgerRef(kind="evm", ledger_id=self.ledger_id, entry="0x" + bytes(tx_hash).hex())
        records = [AnchorRecord(manifest=m, aggregate=a, ledger=ref) for m, a in batches]
        self._index_path.parent.mkdir(parents=True, exist_ok=True)
        with self._index_path.open("a") as handle:
            handle.write(json.dumps({
                "chain_id": self._chain_id, "tx": ref.entry, "root": root,
                "batches": [m.batch_id for m, _ in batches],
                "records": [json.loads(encode(r)) for r in records],
            }) + "\n")
        return ref

    def _wait_confirmations(self, block: int) -> None:
        deadline = time.monotonic() + _RECEIPT_TIMEOUT_S
        while self._web3.eth.block_number - block + 1 < self._confirmations:
            if time.monotonic() > deadline:
                raise LedgerError(f"block {block} did not reach {self._confirmations} "
                                  f"confirmations on {self.ledger_id} in time")
            time.sleep(1)

    def check(self, ref: LedgerRef, root: str, hash_alg: HashAlgorithm) -> None:
        if ref.kind != "evm" or ref.ledger_id != self.ledger_id:
            raise VerificationFailed("ledger", f"the receipt points at {ref.kind} ledger "
                                     f"{ref.ledger_id}, the node at {self._rpc_url} is "
                                     f"{self.ledger_id}")
        try:
            tx = self._web3.eth.get_transaction(ref.entry)  # type: ignore[arg-type]
            receipt = self._web3.eth.get_transaction_receipt(ref.entry)  # type: ignore[arg-type]
        except (TransactionNotFound, ValueError):
            raise VerificationFailed("ledger entry missing", f"transaction {ref.entry} is not "
                                     f"on {self.ledger_id}") from None
        want = calldata(root, hash_alg)
        if bytes(tx["input"]) != want or receipt["status"] != 1:
            raise VerificationFailed("ledger entry different", f"transaction {ref.entry} "
                                     f"carries {bytes(tx['input']).hex()}, want {want.hex()}")
        depth = self._web3.eth.block_number - receipt["blockNumber"] + 1
        if depth < self._confirmations:
            raise VerificationFailed("ledger confirmations", f"transaction {ref.entry} has "
                                     f"{depth} confirmations, want {self._confirmations}")
