"""actctl: inspect and steer act."""
