"""Merkle benchmark: root plus every inclusion proof, our code against pymerkle.

    .venv/bin/pip install pymerkle==7.0.0   # the peer library; not a project dependency
    .venv/bin/python bench/merkle_bench.py --leaves 1000000 --peer-leaves 20000

pymerkle builds proofs one at a time and is too slow for a million leaves in a bench run, so
both libraries are also timed on the same ``--peer-leaves`` leaves; the ratio uses that run.
Both use SHA-256 there (pymerkle's RFC 6962 mode); ours is also timed with BLAKE3.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from anchoring import merkle

RESULTS = Path(__file__).with_name("results")


def ours(leaves: list[bytes], hash_alg: str) -> float:
    started = time.perf_counter()
    hasher = merkle.hasher_for(hash_alg)
    root, proofs = merkle.tree(leaves, hasher)
    elapsed = time.perf_counter() - started
    assert merkle.verify_inclusion(leaves[-1], len(leaves) - 1, len(leaves), proofs[-1], root,
                                   hasher)
    return len(leaves) / elapsed


def pymerkle_rate(leaves: list[bytes]) -> float:
    from pymerkle import InmemoryTree

    started = time.perf_counter()
    tree = InmemoryTree(algorithm="sha256")
    for leaf in leaves:
        tree.append_entry(leaf)
    size = tree.get_size()
    state = tree.get_root(size)
    proofs = [tree.prove_inclusion(index, size) for index in range(1, size + 1)]
    elapsed = time.perf_counter() - started
    assert len(proofs) == len(leaves)
    ours_root = merkle.root(leaves, merkle.SHA256)
    assert ours_root == state, "pymerkle and we disagree on the RFC 6962 root"
    return len(leaves) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--peer-leaves", type=int, default=20_000)
    parser.add_argument("--leaf-bytes", type=int, default=200)
    args = parser.parse_args()
    leaves = [os.urandom(args.leaf_bytes) for _ in range(args.leaves)]
    peer = leaves[:args.peer_leaves]
    results = {
        "ours_blake3_leaves_per_s": ours(leaves, "blake3"),
        "ours_sha256_leaves_per_s": ours(leaves, "sha256"),
        "ours_sha256_peer_size_leaves_per_s": ours(peer, "sha256"),
        "pymerkle_sha256_peer_size_leaves_per_s": pymerkle_rate(peer),
    }
    results["ratio_vs_pymerkle"] = (results["ours_sha256_peer_size_leaves_per_s"]
                                    / results["pymerkle_sha256_peer_size_leaves_per_s"])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "merkle.json").write_text(json.dumps({"args": vars(args), **results}, indent=2))
    for name, value in results.items():
        print(f"{name:<42}{value:>14,.1f}")


if __name__ == "__main__":
    main()
