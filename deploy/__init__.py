"""The local stack: installs, starts, health-checks and stops the real services on 127.0.0.1."""
