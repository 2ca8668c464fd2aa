"""Errors shared by every layer: a leaf below ``models/``, ``datasets/`` and ``engine/`` (which re-exports
``ConfigError`` from ``engine.config``, where the rest of the code imports it)."""


class ConfigError(ValueError):
    """A config file, key or value is not what is expected."""
