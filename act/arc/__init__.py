"""ARC CE back end (ARC CE REST interface)."""
