"""RFC 9162 Merkle tree hashing, proofs and their verification (pure functions).

A leaf's hash is ``SHA-256(0x00 || entry bytes)``, an interior node's is
``SHA-256(0x01 || left || right)``, and the tree over ``n`` leaves splits at the
largest power of two below ``n`` (RFC 9162 section 2.1). The entry bytes are the
canonical bytes of an audit entry, the same bytes whose digest the hash chain links.

Stores keep the hash of every *full* subtree, keyed ``(level, index)``: the node
covering leaves ``[index * 2**level, (index + 1) * 2**level)``. Any proof then needs
O(log n) of them: :func:`inclusion_keys` / :func:`consistency_keys` name the nodes,
a store fetches them in one round trip, and :func:`inclusion_proof` /
:func:`consistency_proof` assemble the proof. The verifiers need nothing but hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = [
    "EMPTY_ROOT",
    "Frontier",
    "NodeKey",
    "ProofError",
    "consistency_keys",
    "consistency_proof",
    "inclusion_keys",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "range_keys",
    "root_from_leaves",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
NodeKey = tuple[int, int]  # (level, index) of a full subtree
Fetch = Callable[[Sequence[NodeKey]], Mapping[NodeKey, bytes]]


class ProofError(ValueError):
    """A proof does not verify, or a proof request is out of range."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaves(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, straight from the RFC's recursive definition (O(n))."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    # Pairing left to right and carrying an odd last node up builds the same tree
    # as splitting at the largest power of two.
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def range_keys(lo: int, hi: int) -> list[NodeKey]:
    """The full subtrees whose hashes make MTH(D[lo:hi]) for a range the RFC's
    recursion produces (``lo`` a multiple of the largest power of two <= hi - lo),
    left to right, largest first."""
    keys: list[NodeKey] = []
    while lo < hi:
        size = hi - lo
        level = size.bit_length() - 1
        if lo % (1 << level):
            raise ValueError(f"range [{lo}, {hi}) is not aligned")
        keys.append((level, lo >> level))
        lo += 1 << level
    return keys


def _range_hash(lo: int, hi: int, nodes: Mapping[NodeKey, bytes]) -> bytes:
    parts = [nodes[k] for k in range_keys(lo, hi)]
    h = parts[-1]
    for part in reversed(parts[:-1]):
        h = node_hash(part, h)
    return h


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose hashes form PATH(index, D[size]), leaf end first."""
    out: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo = lo + k
    out.reverse()
    return out


def _consistency_ranges(old: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose hashes form PROOF(old, D[size]), innermost first."""
    out: list[tuple[int, int]] = []
    lo, hi, whole = 0, size, True
    m = old
    while True:
        n = hi - lo
        if m == n:
            if not whole:
                out.append((lo, hi))
            break
        k = _split(n)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    out.reverse()
    return out


def _check_sizes(index: int, size: int) -> None:
    if not (0 <= index < size):
        raise ProofError(f"leaf {index} is not in a tree of size {size}")


def inclusion_keys(index: int, size: int) -> list[NodeKey]:
    """Stored nodes an inclusion proof of leaf ``index`` (0-based) in ``size`` needs."""
    _check_sizes(index, size)
    return [k for lo, hi in _inclusion_ranges(index, size) for k in range_keys(lo, hi)]


def consistency_keys(old: int, size: int) -> list[NodeKey]:
    """Stored nodes a consistency proof from ``old`` to ``size`` needs."""
    _check_consistency_sizes(old, size)
    if old in (0, size):
        return []
    return [k for lo, hi in _consistency_ranges(old, size) for k in range_keys(lo, hi)]


def _check_consistency_sizes(old: int, size: int) -> None:
    if not (0 <= old <= size):
        raise ProofError(f"no consistency proof from size {old} to size {size}")


def inclusion_proof(index: int, size: int, fetch: Fetch) -> list[bytes]:
    """PATH(index, D[size]) from stored full-subtree hashes (``fetch`` gets them by key)."""
    nodes = fetch(inclusion_keys(index, size))
    return [_range_hash(lo, hi, nodes) for lo, hi in _inclusion_ranges(index, size)]


def consistency_proof(old: int, size: int, fetch: Fetch) -> list[bytes]:
    """PROOF(old, D[size]) from stored full-subtree hashes; empty for 0 and for ``old == size``."""
    keys = consistency_keys(old, size)
    if not keys:
        return []
    nodes = fetch(keys)
    return [_range_hash(lo, hi, nodes) for lo, hi in _consistency_ranges(old, size)]


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 section 2.1.3.2. Raises :class:`ProofError` unless ``proof`` shows
    that ``leaf`` (a leaf hash) is leaf ``index`` of the tree of ``size`` with ``root``."""
    if not (0 <= index < size):
        raise ProofError(f"leaf {index} is not in a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if len(p) != HASH_SIZE:
            raise ProofError("proof element is not a SHA-256 hash")
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if r != root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(old: int, size: int, old_root: bytes, root: bytes, proof: Sequence[bytes]) -> None:
    """RFC 9162 section 2.1.4.2. Raises :class:`ProofError` unless ``proof`` shows the
    tree of ``size`` with ``root`` extends the tree of ``old`` with ``old_root``."""
    _check_consistency_sizes(old, size)
    if any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("proof element is not a SHA-256 hash")
    if old == size:
        if proof:
            raise ProofError("a proof between equal sizes is empty")
        if old_root != root:
            raise ProofError("two trees of the same size have different roots")
        return
    if old == 0:
        # Every tree extends the empty one; only the empty root is checked.
        if proof:
            raise ProofError("a proof from the empty tree is empty")
        if old_root != EMPTY_ROOT:
            raise ProofError("the empty tree has the hash of no input")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root or sr != root:
        raise ProofError("consistency proof does not lead to both roots")


class Frontier:
    """The compact range of a growing tree: the roots of its full subtrees, largest
    first (one per bit of the size). Appending costs O(1) amortised and says which
    full subtrees it completed, so a store can keep them."""

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self.size = size
        self.hashes = list(hashes)
        if len(self.hashes) != bin(size).count("1"):
            raise ValueError(f"a frontier of size {size} has {bin(size).count('1')} hashes")

    @staticmethod
    def keys(size: int) -> list[NodeKey]:
        """The stored nodes that make the frontier of ``size``."""
        return [(level, (size >> level) - 1) for level in range(size.bit_length() - 1, -1, -1) if size >> level & 1]

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; returns the full subtrees completed, ``(level, index, hash)``."""
        index = self.size
        made = [(0, index, leaf)]
        h, level = leaf, 0
        while index >> level & 1:
            h = node_hash(self.hashes.pop(), h)
            level += 1
            made.append((level, index >> level, h))
        self.hashes.append(h)
        self.size += 1
        return made

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        h = self.hashes[-1]
        for part in reversed(self.hashes[:-1]):
            h = node_hash(part, h)
        return h

    def pack(self) -> bytes:
        return b"".join(self.hashes)

    @classmethod
    def unpack(cls, size: int, packed: bytes) -> Frontier:
        if len(packed) != HASH_SIZE * bin(size).count("1"):
            raise ValueError(f"stored frontier does not fit a tree of size {size}")
        return cls(size, [packed[i : i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE)])

    def copy(self) -> Frontier:
        return Frontier(self.size, self.hashes)
