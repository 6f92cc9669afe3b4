"""act as one service: the whole configuration, the built-in daemons, and the commands that run
them (``act-daemon``, ``actd``).

This package sits above every other but ``act.ctl`` and ``act.demo`` (the layer contract in
``pyproject.toml``, checked by ``lint-imports`` in ``make check``): it is where the packages are
put together. Each package keeps its own settings, daemons and queries; nothing below imports
this package.
"""
