"""GPT-SoVITS v2 models, front ends, feature extractors and checkpoint I/O."""
