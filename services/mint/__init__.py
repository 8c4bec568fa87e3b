"""Minting service: ERC-721 portraits with OpenSea metadata, exactly once per idempotency key."""

from services.mint.ipfs import ipfs_cid

__all__ = ["ipfs_cid"]
