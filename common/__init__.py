"""Plumbing shared by channels and agents: the error taxonomy, backoff, HTTP helpers."""
