"""One router per resource: speech (synthesis) and voices (the registry)."""
