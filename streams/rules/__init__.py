"""The customs rules: pure functions of (reading, declaration, container state, thresholds)."""
