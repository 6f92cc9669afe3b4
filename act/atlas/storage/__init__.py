"""Checks of output files on storage elements: size and adler32, per URL scheme."""
