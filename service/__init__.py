"""Lean serving package: artifact contract, registry, wire format and the /act server (no torch)."""

__version__ = "0.1.0"
