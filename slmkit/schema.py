"""The base class for every recipe section: unknown keys are errors, defaults live here."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A recipe section. Every field has a description (docs/recipes.md is generated from them)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
