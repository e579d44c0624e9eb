"""Pure evaluation: plain data in, plain data out (no I/O, no clock)."""
