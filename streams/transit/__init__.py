"""Linked ports: following a declared movement between two ports and checking it (pure)."""
