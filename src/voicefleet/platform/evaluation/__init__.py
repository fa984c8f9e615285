"""How good a voice is: speaker similarity, DNSMOS, intelligibility (WER) and speed.

    voicefleet eval val.list --voice alice --storage runs --pretrained pretrained_models --out out/eval

The pieces, each usable on its own (training and sweeps score a subset of lines with models they
already hold):

* `metrics`: scoring functions registered by name (`METRICS`): similarity, dnsmos, wer;
* `instruments`: the speaker encoder, DNSMOS and the recogniser, loaded once per process;
* `runner`: `evaluate_voice` / `evaluate_audio` -> `Evaluation` (rows + summary + config);
* `report`: `write_evaluation` -> eval.json, utterances.csv, audio, report.md with plots;
* `api`: `evaluate_list`, the list-file-to-report call behind the CLI.

Needs the `voicefleet[eval]` extra; without it, evaluating fails with one line naming it.
"""

from voicefleet.platform.evaluation.api import VoiceSource, evaluate_list, open_voice
from voicefleet.platform.evaluation.instruments import EXTRA_HINT, EvaluationError, MissingInstrument
from voicefleet.platform.evaluation.metrics import METRICS, Clip, Reference, ScoringOptions, register
from voicefleet.platform.evaluation.report import write_evaluation
from voicefleet.platform.evaluation.runner import (SUMMARY_FIELDS, Evaluation, evaluate_audio, evaluate_voice,
                                                   select_lines)

__all__ = ["EXTRA_HINT", "METRICS", "SUMMARY_FIELDS", "Clip", "Evaluation", "EvaluationError", "MissingInstrument",
           "Reference", "ScoringOptions", "VoiceSource", "evaluate_audio", "evaluate_list", "evaluate_voice",
           "open_voice", "register", "select_lines", "write_evaluation"]
