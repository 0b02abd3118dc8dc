"""Dataset views (``POST/GET /v1/datasets``)."""
from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "id": "3f2a9c1e5b7d4e0f8a6b2c4d1e3f5a7b", "name": "digits.csv", "format": "csv",
        "n_samples": 1797, "n_features": 64, "n_classes": 10,
        "class_counts": {"0": 178, "1": 182}, "feature_range": [0.0, 16.0],
        "visible_units_hint": "gaussian", "n_labelled": 1797, "n_with_side": 1797,
        "status": "ready", "status_reason": None,
        "sha256": "9b1c...", "size_bytes": 276480,
        "created_at": "2025-01-01T00:00:00Z", "builtin": False}]})

    id: str
    name: str
    format: str = Field(description="csv | npz | idx | builtin")
    status: str = Field("ready", description="validating (checked after the 202) | ready | failed")
    status_reason: str | None = Field(None, description="why it failed (as a 422 would say)")
    n_samples: int | None = Field(None, description="null until the check has passed")
    n_features: int | None = None
    n_classes: int | None = None
    class_counts: dict[str, int] | None = None
    feature_range: list[float] | None = Field(None, description="[min, max] over all features")
    visible_units_hint: str | None = Field(None, description='"bernoulli" if every value is in '
                                                             '[0, 1], else "gaussian"')
    n_labelled: int | None = Field(None, description="rows that carry a label (an empty CSV "
                                                     "cell, or -1 in an array, is none): "
                                                     "fine-tuning uses only these")
    n_with_side: int | None = Field(None, description="rows that carry a side value (the label "
                                                      "when there is no side column or groups "
                                                      "array): DR pairs only these")
    feature_names: list[str] | None = Field(
        None, description="a CSV's feature columns by name, in the order the model takes "
                          "them (null for NPZ, IDX and built-in datasets, and for CSVs "
                          "checked before names were kept)")
    sha256: str
    size_bytes: int
    created_at: datetime
    label_column: str | None = None
    side_info_column: str | None = None
    builtin: bool = False


class DatasetList(BaseModel):
    items: list[DatasetOut]
    next_page_token: str | None = None
