"""codeQ: a queueing and completion service for event-driven systems."""

# The one place the version is set: pyproject.toml reads it from here.
__version__ = "0.2.0"
