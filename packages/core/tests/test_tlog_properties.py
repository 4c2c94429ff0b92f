"""RFC 9162 Merkle math: the incremental tree and its proofs against a naive
recomputation straight from the RFC's recursive definitions, for random sizes."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from execauth_core import tlog
from execauth_core.tlog import EMPTY_ROOT, Frontier, ProofError, leaf_hash, node_hash


def naive_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(naive_root(leaves[:k]), naive_root(leaves[k:]))


def naive_path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*naive_path(m, leaves[:k]), naive_root(leaves[k:])]
    return [*naive_path(m - k, leaves[k:]), naive_root(leaves[:k])]


def naive_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [naive_root(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*naive_subproof(m, leaves[:k], whole), naive_root(leaves[k:])]
    return [*naive_subproof(m - k, leaves[k:], False), naive_root(leaves[:k])]


def build(n: int) -> tuple[list[bytes], dict[tuple[int, int], bytes], list[bytes]]:
    """Leaves, every stored full subtree, and the root after each append."""
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    nodes: dict[tuple[int, int], bytes] = {}
    frontier = Frontier()
    roots = [EMPTY_ROOT]
    for leaf in leaves:
        for level, index, h in frontier.append(leaf):
            nodes[(level, index)] = h
        roots.append(frontier.root())
    return leaves, nodes, roots


def fetch_from(nodes: dict[tuple[int, int], bytes]) -> tlog.Fetch:
    return lambda keys: {k: nodes[k] for k in keys}


def flip(proof: list[bytes], i: int, bit: int) -> list[bytes]:
    out = list(proof)
    b = bytearray(out[i])
    b[bit // 8] ^= 1 << (bit % 8)
    out[i] = bytes(b)
    return out


sizes = st.integers(min_value=1, max_value=300)


def test_known_roots() -> None:
    assert EMPTY_ROOT == hashlib.sha256(b"").digest()
    # RFC 6962 / 9162 reference vector: the tree over the 8 test inputs.
    inputs = [
        bytes.fromhex(h)
        for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")
    ]
    leaves = [leaf_hash(x) for x in inputs]
    assert naive_root(leaves).hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert tlog.root_from_leaves(leaves) == naive_root(leaves)


@settings(max_examples=60, deadline=None)
@given(n=sizes)
def test_incremental_roots_equal_naive(n: int) -> None:
    leaves, nodes, roots = build(n)
    for size in {1, n, n // 2 + 1, max(1, n - 1)}:
        assert roots[size] == naive_root(leaves[:size]) == tlog.root_from_leaves(leaves[:size])
    f = Frontier.unpack(n, Frontier(n, [nodes[k] for k in Frontier.keys(n)]).pack())
    assert f.root() == roots[n]


@settings(max_examples=80, deadline=None)
@given(data=st.data(), n=sizes)
def test_inclusion_proofs(data: st.DataObject, n: int) -> None:
    leaves, nodes, roots = build(n)
    size = data.draw(st.integers(min_value=1, max_value=n))
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    proof = tlog.inclusion_proof(index, size, fetch_from(nodes))
    assert proof == naive_path(index, leaves[:size])
    tlog.verify_inclusion(leaves[index], index, size, proof, roots[size])
    # every mutation fails: a flipped bit, a dropped or added element, another leaf, index or size
    if proof:
        i = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        bad = [flip(proof, i, data.draw(st.integers(0, 255))), proof[:-1], proof[1:]]
    else:
        bad = []
    bad.append([*proof, roots[size]])
    for p in bad:
        try:
            tlog.verify_inclusion(leaves[index], index, size, p, roots[size])
        except ProofError:
            continue
        raise AssertionError(f"mutated proof verified: {index} in {size}")
    other = data.draw(st.integers(min_value=0, max_value=size))
    if other != index:
        failed = False
        try:
            tlog.verify_inclusion(leaves[index], other, size, proof, roots[size])
        except ProofError:
            failed = True
        assert failed
    try:
        tlog.verify_inclusion(leaf_hash(b"not in the log"), index, size, proof, roots[size])
        raise AssertionError("a foreign leaf verified")
    except ProofError:
        pass


@settings(max_examples=80, deadline=None)
@given(data=st.data(), n=sizes)
def test_consistency_proofs(data: st.DataObject, n: int) -> None:
    leaves, nodes, roots = build(n)
    size = data.draw(st.integers(min_value=1, max_value=n))
    old = data.draw(st.integers(min_value=1, max_value=size))
    proof = tlog.consistency_proof(old, size, fetch_from(nodes))
    assert proof == naive_subproof(old, leaves[:size], True)
    tlog.verify_consistency(old, size, roots[old], roots[size], proof)
    bad: list[tuple[int, int, bytes, bytes, list[bytes]]] = []
    if proof:
        i = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        bad += [
            (old, size, roots[old], roots[size], flip(proof, i, data.draw(st.integers(0, 255)))),
            (old, size, roots[old], roots[size], proof[:-1]),
            (old, size, roots[old], roots[size], [*proof, roots[0]]),
        ]
    wrong_old = leaf_hash(b"fork")
    bad.append((old, size, wrong_old, roots[size], proof))
    bad.append((old, size, roots[old], wrong_old, proof))
    if old < size:
        bad.append((old + 1, size, roots[old], roots[size], proof))
    for args in bad:
        try:
            tlog.verify_consistency(*args)
        except ProofError:
            continue
        raise AssertionError(f"mutated consistency proof verified: {old} -> {size}")


def test_out_of_range_requests_are_refused() -> None:
    _, nodes, roots = build(5)
    for index, size in ((5, 5), (-1, 5), (0, 0)):
        try:
            tlog.inclusion_proof(index, size, fetch_from(nodes))
            raise AssertionError("out of range proof made")
        except ProofError:
            pass
    try:
        tlog.consistency_proof(6, 5, fetch_from(nodes))
        raise AssertionError("backwards consistency made")
    except ProofError:
        pass
    tlog.verify_consistency(0, 5, EMPTY_ROOT, roots[5], [])
    tlog.verify_consistency(5, 5, roots[5], roots[5], [])


@settings(max_examples=25, deadline=None)
@given(n=st.integers(min_value=1, max_value=120), keep=st.integers(min_value=4, max_value=40), data=st.data())
def test_store_trees_equal_naive_and_prove_every_retained_entry(n: int, keep: int, data: st.DataObject) -> None:
    """The memory store's incremental tree (bounded: old entries fall off) and its
    proofs, against the naive recomputation over every entry ever appended."""
    from execauth_core.audit import canonical_body
    from execauth_core.stores import MemoryAuditLog

    log = MemoryAuditLog(max_entries=keep)
    leaves = []
    for i in range(n):
        entry = log.append({"event": "denial", "executed": False, "time": i})
        leaves.append(leaf_hash(canonical_body(entry.body)))
    size, root = log.tree_head()
    assert size == n and root == naive_root(leaves)
    for entry in log.entries():
        proof = log.inclusion_proof(entry.seq - 1, size)
        assert proof == naive_path(entry.seq - 1, leaves)
        tlog.verify_inclusion(leaves[entry.seq - 1], entry.seq - 1, size, proof, root)
    old = data.draw(st.integers(min_value=max(1, n - keep + 1), max_value=n))
    assert log.root_at(old) == naive_root(leaves[:old])


def test_sqlite_store_tree_equals_naive(tmp_path: object) -> None:
    from pathlib import Path

    from execauth_core.audit import canonical_body
    from execauth_core.stores import SQLiteAuditLog

    log = SQLiteAuditLog(Path(str(tmp_path)) / "t.db")
    leaves = []
    for i in range(70):
        entry = log.append({"event": "denial", "executed": False, "time": i})
        leaves.append(leaf_hash(canonical_body(entry.body)))
        assert log.tree_head() == (i + 1, naive_root(leaves))
    for old in range(71):
        assert log.consistency_proof(old, 70) == (naive_subproof(old, leaves, True) if 0 < old < 70 else [])
