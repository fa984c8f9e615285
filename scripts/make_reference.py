"""Write a synthetic 4 s voice-like reference clip (a gliding harmonic tone): python scripts/make_reference.py OUT.wav

Used by the demo until a real corpus is bundled; any 3-10 s recording works in its place.
"""

import sys

import numpy as np
import soundfile as sf

sr = 32000
t = np.arange(4 * sr) / sr
f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)  # a slowly gliding pitch around 140 Hz
phase = 2 * np.pi * np.cumsum(f0) / sr
wave = sum(0.3 / k * np.sin(k * phase) for k in range(1, 8)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t) ** 2)
sf.write(sys.argv[1], (0.5 * wave).astype(np.float32), sr)
