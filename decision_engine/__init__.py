"""Real-time next-best-action decisioning for contact centers."""

from __future__ import annotations

__version__ = "0.1.0"
