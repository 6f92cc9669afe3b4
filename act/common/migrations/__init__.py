"""Alembic migrations of act's schema; applied with ``actctl db upgrade``."""
