"""Dataset views (``POST/GET /v1/datasets``)."""
from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "id": "3f2a9c1e5b7d4e0f8a6b2c4d1e3f5a7b", "name": "digits.csv", "format": "csv",
        "n_samples": 1797, "n_features": 64, "n_classes": 10,
        "class_counts": {"0": 178, "1": 182}, "feature_range": [0.0, 16.0],
        "visible_units_hint": "gaussian", "sha256": "9b1c...", "size_bytes": 276480,
        "created_at": "2025-01-01T00:00:00Z", "builtin": False}]})

    id: str
    name: str
    format: str = Field(description="csv | npz | idx | builtin")
    n_samples: int
    n_features: int
    n_classes: int
    class_counts: dict[str, int]
    feature_range: list[float] = Field(description="[min, max] over all features")
    visible_units_hint: str = Field(description='"bernoulli" if every value is in [0, 1], '
                                                'else "gaussian"')
    sha256: str
    size_bytes: int
    created_at: datetime
    label_column: str | None = None
    side_info_column: str | None = None
    builtin: bool = False


class DatasetList(BaseModel):
    items: list[DatasetOut]
    next_page_token: str | None = None
