"""Live guidance: moments detected in one interaction's event stream (on durable_rules)."""
