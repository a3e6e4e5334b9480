"""Utilities every layer may use: atomic writes, locks, the cycle collector, provenance, figure style."""
