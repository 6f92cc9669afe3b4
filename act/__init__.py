"""act: a bridge between the PanDA workload manager and grid compute elements."""

__version__ = "0.1.0"
