"""ATLAS application layer: PanDA jobs, job descriptions, heartbeats, validation."""

# act.common.config imports this package's panda_settings for its ``panda:`` section; loading
# the config first makes either import order work.
import act.common.config  # noqa: F401
