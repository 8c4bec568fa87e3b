"""IPFS content identifiers computed here, the way a plain ``ipfs add`` builds them.

A marketplace opens ``ipfs://<cid>`` through any gateway, so the CID must be the one every
IPFS node derives from the same bytes: the tokenURI must not depend on our own server or
on a provider telling us the CID. ``ipfs add`` (go-ipfs/kubo defaults, CIDv0) builds:

* fixed-size chunks of 256 KiB;
* one dag-pb **leaf** per chunk whose ``Data`` is a UnixFS ``File`` message carrying the
  chunk and its size (not raw leaves: those are what ``--cid-version=1`` switches to, and
  they give a different CID for the same bytes);
* a **balanced** DAG of at most 174 links per node (kubo's ``DefaultLinksPerBlock``:
  8 KiB of links at about 47 bytes each); inner nodes are UnixFS ``File`` messages
  with the total ``filesize`` and one ``blocksizes`` entry per child; links have an empty
  name and ``Tsize`` = the child's serialised size plus its own links' ``Tsize``;
* a file of one chunk (or none) is a single leaf.

The same root is written as CIDv0 (``Qm…``, base58btc of the sha2-256 multihash) or as
CIDv1 dag-pb in lower-case base32 (``bafybei…``); :func:`ipfs_cid` returns the latter.
The tests check both against Debian's ``ipfs_cid`` program (rust-cid-npm).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

CHUNK_SIZE = 256 * 1024
MAX_LINKS = 174

_DAG_PB = 0x70
_SHA2_256 = 0x12
_UNIXFS_FILE = 2
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field_bytes(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _unixfs_file(data: bytes | None, filesize: int, blocksizes: list[int]) -> bytes:
    # proto2 field order of unixfs.proto: Type=1, Data=2, filesize=3, blocksizes=4 (not packed).
    # kubo leaves Data out of inner nodes and of the empty file, but always writes filesize.
    out = _field_varint(1, _UNIXFS_FILE)
    if data:
        out += _field_bytes(2, data)
    out += _field_varint(3, filesize)
    for size in blocksizes:
        out += _field_varint(4, size)
    return out


@dataclass(frozen=True)
class _Node:
    multihash: bytes
    # Bytes of the whole sub-DAG (what a parent's link Tsize records) and file bytes under it.
    tsize: int
    filesize: int


def _pb_node(links: list[_Node], data: bytes) -> bytes:
    # dag-pb's canonical form writes every PBLink (field 2) before Data (field 1); each link
    # is Hash=1, Name=2 (empty, but present, as go-merkledag wrote it), Tsize=3.
    out = b""
    for link in links:
        body = _field_bytes(1, link.multihash) + _field_bytes(2, b"") + _field_varint(3, link.tsize)
        out += _field_bytes(2, body)
    return out + _field_bytes(1, data)


def _node(links: list[_Node], data: bytes) -> _Node:
    block = _pb_node(links, data)
    multihash = bytes([_SHA2_256, 32]) + hashlib.sha256(block).digest()
    filesize = sum(link.filesize for link in links)
    return _Node(multihash, len(block) + sum(link.tsize for link in links), filesize)


def _leaf(chunk: bytes) -> _Node:
    node = _node([], _unixfs_file(chunk, len(chunk), []))
    return _Node(node.multihash, node.tsize, len(chunk))


def _chunks(data: bytes) -> Iterator[bytes]:
    if not data:
        yield b""
        return
    for start in range(0, len(data), CHUNK_SIZE):
        yield data[start : start + CHUNK_SIZE]


def _balanced_root(data: bytes) -> _Node:
    leaves = (_leaf(chunk) for chunk in _chunks(data))
    root = next(leaves)
    # kubo's balanced builder: the root so far becomes the first child of a new root one
    # level deeper, which is then filled depth-first with up to MAX_LINKS children per node.
    pending = _Peekable(leaves)
    depth = 1
    while pending.has_more():
        root = _fill([root], pending, depth)
        depth += 1
    return root


class _Peekable:
    def __init__(self, it: Iterator[_Node]) -> None:
        self._it = it
        self._next: _Node | None = None
        self._done = False

    def has_more(self) -> bool:
        if self._next is None and not self._done:
            try:
                self._next = next(self._it)
            except StopIteration:
                self._done = True
        return self._next is not None

    def take(self) -> _Node:
        if not self.has_more():
            raise StopIteration
        node, self._next = self._next, None
        assert node is not None
        return node


def _fill(children: list[_Node], leaves: _Peekable, depth: int) -> _Node:
    """A node at ``depth`` above the leaves, starting with ``children``, filled from ``leaves``."""
    while len(children) < MAX_LINKS and leaves.has_more():
        if depth == 1:
            children.append(leaves.take())
        else:
            children.append(_fill([], leaves, depth - 1))
    blocksizes = [child.filesize for child in children]
    return _node(children, _unixfs_file(None, sum(blocksizes), blocksizes))


def _base58(raw: bytes) -> str:
    n = int.from_bytes(raw, "big")
    out = ""
    while n:
        n, rem = divmod(n, 58)
        out = _B58[rem] + out
    zeros = len(raw) - len(raw.lstrip(b"\0"))
    return "1" * zeros + out


def root_multihash(data: bytes) -> bytes:
    """The sha2-256 multihash of the UnixFS root ``ipfs add`` makes of ``data``."""
    return _balanced_root(data).multihash


def ipfs_cid_v0(data: bytes) -> str:
    """``data``'s CIDv0 (``Qm…``), what ``ipfs add`` prints by default."""
    return _base58(root_multihash(data))


def ipfs_cid(data: bytes) -> str:
    """``data``'s IPFS CID as a plain ``ipfs add`` builds it, written as CIDv1 base32 (``bafybei…``).

    The DAG is the CIDv0 one (dag-pb leaves, 256 KiB chunks, balanced, 174 links per
    node); only the encoding of its root CID differs.
    """
    raw = _varint(1) + _varint(_DAG_PB) + root_multihash(data)
    return "b" + base64.b32encode(raw).decode("ascii").lower().rstrip("=")


def is_cid(text: str) -> bool:
    """Whether ``text`` looks like a CIDv0 or a base32 CIDv1 (what we accept back from a provider)."""
    if text.startswith("Qm") and len(text) == 46:
        return all(c in _B58 for c in text)
    return (
        text.startswith("b")
        and len(text) > 10
        and all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in text[1:])
    )


def cid_v0_to_v1(cid: str) -> str:
    """A ``Qm…`` CIDv0 rewritten as CIDv1 base32 (the same DAG), for comparing a provider's answer."""
    n = 0
    for c in cid:
        n = n * 58 + _B58.index(c)
    multihash = n.to_bytes(34, "big")
    raw = _varint(1) + _varint(_DAG_PB) + multihash
    return "b" + base64.b32encode(raw).decode("ascii").lower().rstrip("=")
