"""Shared foundation: config, database, states, claims, daemon loop, supervisor."""
