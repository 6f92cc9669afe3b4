"""The CE engine: one set of daemons for every kind of compute element (see :mod:`.backend`)."""
