"""Helpers every layer shares: atomic writes, run records, image montages (the lowest layer)."""
