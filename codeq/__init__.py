"""codeQ: a queueing and completion service for event-driven systems."""
