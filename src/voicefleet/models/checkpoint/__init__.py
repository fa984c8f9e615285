"""Official GPT-SoVITS checkpoint formats: safe loading, saving, and key conversion.

Exports load on first use (PEP 562), so that `checkpoint.files` and `checkpoint.errors` can be
imported without importing torch.
"""

import importlib

_EXPORTS = {
    "CheckpointError": "errors", "KeyMap": "keymap", "check_state_dict": "keymap", "shapes_of": "keymap",
    "HParams": "pickle_io", "load_official_file": "pickle_io", "save_official_file": "pickle_io",
    "to_plain": "pickle_io",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
