"""Test doubles that ship with act: stand-ins for the services act talks to, used by the tests,
the benchmarks and the embedded demo (``actctl demo``). Nothing in act's production path imports
them (the layer contract of ``pyproject.toml`` keeps it so)."""
