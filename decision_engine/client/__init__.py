"""Small gRPC clients for humans: the CLI's `decide`, `outcome`, `rules show`,
`event publish` (calls.py) and `interaction replay` / `interaction watch` (interaction.py).

Protobuf over a channel, never the server's modules: a client speaks the protocol only.
"""

from __future__ import annotations

from decision_engine.client.calls import (
    Connection,
    call_decide,
    call_publish_event,
    call_record_outcome,
    call_ruleset_status,
    print_decision,
)

__all__ = [
    "Connection",
    "call_decide",
    "call_publish_event",
    "call_record_outcome",
    "call_ruleset_status",
    "print_decision",
]
