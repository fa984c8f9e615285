"""Platform layer: data preparation on Ray Data, fine-tuning on Ray Train and the voice registry.

Built on `voicefleet.models`, `voicefleet.text` and `voicefleet.inference`; arrows point one way:
those never import platform code (see tests/test_architecture.py and docs/architecture.md).
"""
