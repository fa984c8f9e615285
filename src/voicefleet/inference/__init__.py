"""Synthesis: reference clip + text -> 32 kHz audio (`pipeline`), its knobs (`params`), GPT
decoding (`generation`: sampling, KV cache, decode loop), the reduced-precision CPU path built
from the fp32 modules (`fast`, `native/`) and audio file output (`audio_io`)."""
