"""Ray Serve: many voices behind one HTTP endpoint.

    serve run serve_config.yaml            # or: voicefleet serve --storage runs --pretrained pretrained_models

Two deployments: `Gateway` (FastAPI ingress: validation, auth, limits, voice registry) and
`VoiceSynthesizer` (HuBERT + BERT once per replica, voices multiplexed from the registry).
"""

from voicefleet.serve.settings import ApiKey, ServeSettings

__all__ = ["ApiKey", "ServeSettings"]
