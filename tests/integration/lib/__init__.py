"""Helpers for the ucrfs integration tests (stdlib only)."""
