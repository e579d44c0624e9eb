"""Tools for people who write rules: test cases that prove a rule change."""
