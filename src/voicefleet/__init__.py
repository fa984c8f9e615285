"""voicefleet: GPT-SoVITS v2 voice cloning at cluster scale on Ray."""
__version__ = "0.1.0"
