"""ATLAS application layer: PanDA jobs, job descriptions, heartbeats, validation."""
