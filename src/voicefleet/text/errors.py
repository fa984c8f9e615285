"""The text front end's one error class, in a module of its own.

The language front ends (`english`, `langsplit`) raise it and the dispatcher (`frontend`) imports
them, so it cannot live in the dispatcher without an import cycle. `voicefleet.text.frontend`
re-exports it; callers may import it from either place.
"""

from __future__ import annotations


class TextFrontendError(ValueError):
    """Text the front end cannot handle: empty input, an unsupported language, missing data."""
