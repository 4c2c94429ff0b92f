"""What every backend's Merkle tree shares: proofs from stored full-subtree hashes.

A backend stores, with every append and in the same atomic step, the full subtrees
the new leaf completes (``(level, index) -> hash``, see :class:`~execauth_core.tlog.Frontier`)
and the frontier (the compact range of the tree). It implements
:meth:`TreeMixin._fetch_nodes`; proofs come from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .. import tlog
from ..audit import AuditEntry, canonical_body
from ..errors import StoreUnavailable
from ..tlog import Frontier, NodeKey

__all__ = ["TreeMixin", "entry_bytes", "leaf_of", "nodes_for"]


def entry_bytes(entry: AuditEntry) -> bytes:
    """The bytes a leaf hashes: the entry's canonical body, the bytes its digest is of."""
    return canonical_body(entry.body)


def leaf_of(raw: bytes) -> bytes:
    return tlog.leaf_hash(raw)


def nodes_for(frontier: Frontier, leaves: Iterable[bytes]) -> list[tuple[int, int, bytes]]:
    """Append ``leaves`` (leaf hashes) to ``frontier`` in place; every subtree completed."""
    made: list[tuple[int, int, bytes]] = []
    for leaf in leaves:
        made += frontier.append(leaf)
    return made


class TreeMixin:
    """Inclusion and consistency proofs for a backend that stores full subtrees."""

    def _fetch_nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        raise NotImplementedError

    def tree_head(self) -> tuple[int, bytes]:
        """``(size, root)`` of the Merkle tree over the whole log."""
        raise NotImplementedError

    def _fetch_all(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        found = self._fetch_nodes(keys)
        missing = [k for k in keys if k not in found]
        if missing:
            raise StoreUnavailable(f"audit log: Merkle tree node {missing[0]} is missing (tree damaged or not built)")
        return found

    def _check_size(self, size: int | None) -> int:
        current = self.tree_head()[0]
        if size is None:
            return current
        if size > current:
            raise tlog.ProofError(f"the tree has {current} leaves, not {size}")
        return size

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Proof that leaf ``index`` (0-based: the entry ``seq`` is leaf ``seq - 1``)
        is in the tree of ``size`` (default: now)."""
        return tlog.inclusion_proof(index, self._check_size(size), self._fetch_all)

    def consistency_proof(self, old: int, size: int | None = None) -> list[bytes]:
        """Proof that the tree of ``size`` (default: now) extends the tree of ``old``."""
        return tlog.consistency_proof(old, self._check_size(size), self._fetch_all)

    def root_at(self, size: int) -> bytes:
        """The root of the tree of ``size`` leaves, from stored nodes (O(log n))."""
        self._check_size(size)
        if size == 0:
            return tlog.EMPTY_ROOT
        keys = Frontier.keys(size)
        nodes = self._fetch_all(keys)
        return Frontier(size, [nodes[k] for k in keys]).root()

    def stored_leaf(self, index: int) -> bytes | None:
        """The stored leaf hash of leaf ``index``, if any (for the verifier's diagnosis)."""
        return self._fetch_nodes([(0, index)]).get((0, index))

    def stored_nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        """Stored full-subtree hashes (missing keys are left out)."""
        return self._fetch_nodes(keys)
