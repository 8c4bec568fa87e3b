"""Minting service: ERC-721 portraits with OpenSea metadata, exactly once per idempotency key."""
