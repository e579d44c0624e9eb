"""Evaluate: one decision from a compiled ruleset, a customer's state and the context.

Pure: plain data in, plain data out (no I/O, no clock).
"""

from decision_engine.decide.engine import Prepared, decide, prepare

__all__ = ["Prepared", "decide", "prepare"]
