"""The local back end: CE jobs run as processes on this machine."""
