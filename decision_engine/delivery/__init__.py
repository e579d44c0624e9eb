"""Delivery: notices from the outbox to the customer, through pluggable senders."""
