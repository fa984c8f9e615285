"""Official GPT-SoVITS checkpoint formats: safe loading, saving, and key conversion."""

from voicefleet.models.checkpoint.errors import CheckpointError
from voicefleet.models.checkpoint.keymap import KeyMap, check_state_dict, shapes_of
from voicefleet.models.checkpoint.pickle_io import HParams, load_official_file, save_official_file, to_plain

__all__ = ["CheckpointError", "HParams", "KeyMap", "check_state_dict", "load_official_file",
           "save_official_file", "shapes_of", "to_plain"]
