"""One definition per setting: a config that repeats another config's setting takes its field.

    class SweepConfig(BaseModel):
        batch_size: int = same_field(TrainConfig, "batch_size")
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo


def same_field(model: type[BaseModel], name: str, **changes: Any) -> Any:
    """A copy of `model.<name>`'s field (default, bounds, description), with `changes` applied."""
    return FieldInfo.merge_field_infos(model.model_fields[name], **changes)
