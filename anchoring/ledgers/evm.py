"""Anchoring to any EVM chain over JSON-RPC (Besu, Quorum, Ethereum; anvil in tests).

Each aggregate root is written as the calldata of a zero-value transaction from the anchoring
account to itself: ``MAGIC || hash algorithm id || root``. No contract to deploy, audit or
upgrade, the cheapest write (21,000 gas + calldata), and any node answers the verification
lookup (``eth_getTransactionByHash``) without an ABI.

The ledger's identity is the anchoring *account* (CAIP-10: ``eip155:<chain id>:<address>``),
not the chain: anyone can post the magic bytes, so a verifier accepts only a transaction sent
by the account it trusts, to itself, with no value, that succeeded and is final.

What a contract would add — an on-chain index of roots — is kept locally by the anchorer
(``index.jsonl`` in the state directory). The signed transaction is written there *before* it
is sent, so a crash between sending and recording re-sends the same transaction (same nonce:
it can be mined once) instead of anchoring the batches a second time.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from eth_account import Account
from web3 import Web3
from web3.exceptions import TimeExhausted, TransactionNotFound, Web3RPCError
from web3.types import TxParams, TxReceipt, Wei

from anchoring.errors import LedgerError, VerificationFailed
from anchoring.ledgers.base import Anchored
from schemas import AnchorRecord, LedgerRef, encode
from schemas.anchoring import HashAlgorithm
from smartport.redaction import redact_url

MAGIC = b"SPANCHR1"
HASH_IDS = {"blake3": b"\x01", "sha256": b"\x02"}
Finality = Literal["confirmations", "finalized"]
_RECEIPT_TIMEOUT_S = 120.0
_ACCOUNT_ID = re.compile(r"^eip155:(\d{1,20}):(0x[0-9a-fA-F]{40})$")


def calldata(root: str, hash_alg: HashAlgorithm) -> bytes:
    return MAGIC + HASH_IDS[hash_alg] + bytes.fromhex(root)


@dataclass(frozen=True, slots=True)
class AccountId:
    """A CAIP-10 account id: the identity of an EVM ledger."""

    chain_id: int
    address: str  # EIP-55 checksummed

    @classmethod
    def parse(cls, text: str) -> AccountId:
        match = _ACCOUNT_ID.fullmatch(text)
        if match is None:
            raise VerificationFailed("ledger", f"{text!r} is not an EVM ledger id: want "
                                     "eip155:<chain id>:<0x account address>")
        return cls(int(match[1]), Web3.to_checksum_address(match[2]))

    def __str__(self) -> str:
        return f"eip155:{self.chain_id}:{self.address}"


class EvmLedger:
    kind = "evm"

    def __init__(self, rpc_url: str, *, private_key: str | None, confirmations: int,
                 finality: Finality, index_path: Path) -> None:
        self._web3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 10}))
        self._rpc_url = redact_url(rpc_url)  # for messages: API keys hidden
        self._account = Account.from_key(private_key) if private_key else None
        self._confirmations = confirmations
        self._finality = finality
        self._index_path = index_path
        try:
            self._chain_id = int(self._web3.eth.chain_id)
        except Exception as exc:
            raise LedgerError(f"cannot reach the EVM node at {self._rpc_url}: "
                              f"{type(exc).__name__}; is it up? "
                              "(`smartport stack status`)") from exc

    @property
    def ledger_id(self) -> str:
        """The anchoring account; only a ledger opened with its key knows it."""
        if self._account is None:
            raise LedgerError("an EVM ledger opened without its signing key has no ledger id "
                              "of its own: name the account you trust (eip155:<chain>:<address>)")
        return str(AccountId(self._chain_id, self._account.address))

    # -- the local index: intents, then confirmations ----------------------------------------

    def _index(self) -> list[dict[str, Any]]:
        try:
            lines = self._index_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def _append_index(self, line: dict[str, Any]) -> None:
        self._index_path.parent.mkdir(parents=True, exist_ok=True)
        with self._index_path.open("a") as handle:
            handle.write(json.dumps(line) + "\n")
            handle.flush()

    def find(self, batch_prefix: str) -> list[AnchorRecord] | None:
        index = self._index()
        # Lines without a state come from before intents were recorded: anchored ones.
        anchored = {line["tx"] for line in index if line.get("state", "anchored") == "anchored"}
        for line in index:
            if "records" not in line or line["chain_id"] != self._chain_id or not any(
                    batch.startswith(batch_prefix) for batch in line["batches"]):
                continue
            if line["tx"] not in anchored:  # a crash after the intent: finish that transaction
                self._confirm(line)
            return [AnchorRecord.model_validate_json(json.dumps(r)) for r in line["records"]]
        return None

    # -- anchoring ---------------------------------------------------------------------------

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
        ref = LedgerRef(kind="evm", ledger_id=self.ledger_id,
                        entry="0x" + bytes(signed.hash).hex())
        records = [AnchorRecord(manifest=m, aggregate=a, ledger=ref) for m, a in batches]
        intent = {"state": "sent", "chain_id": self._chain_id, "tx": ref.entry, "root": root,
                  "raw": "0x" + bytes(signed.raw_transaction).hex(),
                  "batches": [m.batch_id for m, _ in batches],
                  "records": [json.loads(encode(r)) for r in records]}
        self._append_index(intent)
        self._confirm(intent)
        return ref

    def _confirm(self, intent: dict[str, Any]) -> None:
        """Send the intended transaction (again: the same bytes cannot be mined twice), wait
        until it is final, then record it as anchored."""
        receipt = self._receipt(intent["tx"])
        if receipt is None:
            try:
                self._web3.eth.send_raw_transaction(intent["raw"])
            except (ValueError, Web3RPCError) as exc:  # already known, or nonce taken
                if self._receipt(intent["tx"]) is None and "known" not in str(exc).lower():
                    raise LedgerError(f"anchor transaction {intent['tx']} cannot be sent: "
                                      f"{exc}") from None
            try:
                receipt = self._web3.eth.wait_for_transaction_receipt(
                    intent["tx"], timeout=_RECEIPT_TIMEOUT_S)
            except TimeExhausted:
                raise LedgerError(f"anchor transaction {intent['tx']} was not mined within "
                                  f"{_RECEIPT_TIMEOUT_S:.0f} s") from None
        if receipt["status"] != 1:
            raise LedgerError(f"anchor transaction {intent['tx']} failed on chain "
                              f"{self._chain_id}")
        self._wait(lambda: self._is_final(receipt["blockNumber"]),
                   f"block {receipt['blockNumber']} did not become final ({self._finality})")
        self._append_index({"state": "anchored", "chain_id": self._chain_id,
                            "tx": intent["tx"]})

    def _receipt(self, tx_hash: str) -> TxReceipt | None:
        try:
            return self._web3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except (TransactionNotFound, ValueError):
            return None

    def _is_final(self, block: int) -> bool:
        if self._finality == "finalized":
            return int(self._web3.eth.get_block("finalized")["number"]) >= block
        return self._web3.eth.block_number - block + 1 >= self._confirmations

    def _wait(self, done: Callable[[], bool], message: str) -> None:
        deadline = time.monotonic() + _RECEIPT_TIMEOUT_S
        while not done():
            if time.monotonic() > deadline:
                raise LedgerError(f"{message} on chain {self._chain_id} in time")
            time.sleep(1)

    # -- verification ------------------------------------------------------------------------

    def check(self, ref: LedgerRef, root: str, hash_alg: HashAlgorithm) -> None:
        if ref.kind != "evm":
            raise VerificationFailed("ledger", f"the receipt points at a {ref.kind} ledger, "
                                     f"not the EVM node at {self._rpc_url}")
        account = AccountId.parse(ref.ledger_id)
        if account.chain_id != self._chain_id:
            raise VerificationFailed("ledger", f"the receipt points at ledger {ref.ledger_id}, "
                                     f"the node at {self._rpc_url} is chain {self._chain_id}")
        try:
            tx = self._web3.eth.get_transaction(ref.entry)  # type: ignore[arg-type]
        except (TransactionNotFound, ValueError):
            tx = None
        receipt = self._receipt(ref.entry)
        if tx is None or receipt is None:
            raise VerificationFailed("ledger entry missing", f"transaction {ref.entry} is not "
                                     f"on chain {self._chain_id}")
        sender, to = Web3.to_checksum_address(tx["from"]), tx.get("to")
        if sender != account.address or to is None or Web3.to_checksum_address(
                to) != account.address or int(tx["value"]) != 0 or receipt["status"] != 1:
            raise VerificationFailed("ledger", f"transaction {ref.entry} is not an anchor of "
                                     f"{ref.ledger_id}: sent by {sender} to {to}, value "
                                     f"{tx['value']}, status {receipt['status']}")
        want = calldata(root, hash_alg)
        if bytes(tx["input"]) != want:
            raise VerificationFailed("ledger entry different", f"transaction {ref.entry} "
                                     f"carries {bytes(tx['input']).hex()}, want {want.hex()}")
        if not self._is_final(receipt["blockNumber"]):
            raise VerificationFailed("ledger finality", f"transaction {ref.entry} in block "
                                     f"{receipt['blockNumber']} is not final yet "
                                     f"({self._finality}); ask again later")
