"""Shared test helpers: small synthetic inputs written by the tests themselves."""
