"""One router per resource: speech (synthesis), voices (the registry), a voice's reports, and the
web page at `/`."""
