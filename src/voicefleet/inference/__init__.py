"""Synthesis: reference clip + text -> 32 kHz audio (`pipeline`), its reduced-precision CPU path
(`fast`, `native/`) and audio file output (`audio_io`)."""
