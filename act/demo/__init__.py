"""The embedded demo (``actctl demo``): the whole pipeline on one machine, against the PanDA TEST
DOUBLE, with a stand-in native pilot (:mod:`act.demo.pilot`) on the local CE back end."""
