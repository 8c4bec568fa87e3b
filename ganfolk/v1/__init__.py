"""Generated from protos/ganfolk/v1 by `make protos`. Do not edit."""
