"""The arrays a worker trains on: an uploaded dataset fetched from the store, or a built-in."""
from __future__ import annotations

from pathlib import Path

from drtrain.datasets.builtins import load_builtin
from drtrain.datasets.formats import LoadedData, read_any
from drtrain.kit.models import Dataset
from drtrain.kit.settings import Settings
from drtrain.kit.storage import ObjectStore


def load_arrays(store: ObjectStore, dataset: Dataset | None, builtin_id: str | None,
                settings: Settings, workdir: Path) -> LoadedData:
    """The arrays of an uploaded dataset (downloaded into ``workdir``) or of a built-in."""
    if builtin_id is not None:
        return load_builtin(builtin_id, settings)
    if dataset is None:
        raise ValueError("load_arrays needs a dataset or a builtin id")
    workdir.mkdir(parents=True, exist_ok=True)
    data_path = workdir / f"{dataset.id}.{dataset.format}"
    store.get_to_file(dataset.object_key, data_path)
    labels_path = None
    if dataset.labels_object_key:
        labels_path = workdir / f"{dataset.id}.labels"
        store.get_to_file(dataset.labels_object_key, labels_path)
    return read_any(data_path, dataset.format, labels_path=labels_path,
                    label_column=dataset.label_column or "label",
                    side_info_column=dataset.side_info_column, limits=settings)
