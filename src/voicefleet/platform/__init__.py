"""Platform layer: data preparation, training and serving on Ray, built on `voicefleet.models`.

Arrows point one way: platform code imports model components, never the reverse (see
tests/test_architecture.py).
"""
