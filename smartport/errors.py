"""The one error family. Every message says what failed and how to fix it; the CLI prints it."""

from __future__ import annotations


class SmartportError(Exception):
    """Base of every error a user can act on. The CLI prints the message and exits with ``code``."""

    code = 1


class ConfigError(SmartportError):
    """Settings or command-line input that cannot work."""

    code = 2


class StackError(SmartportError):
    """A local service could not be installed, started or reached."""

    code = 3


class InputRejected(SmartportError):
    """Input (a file, a payload) was rejected; the message names the line or field and why."""

    code = 4
