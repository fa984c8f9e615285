"""GPT-SoVITS v2, v2Pro and v2ProPlus models, front ends, feature extractors and checkpoint I/O."""
