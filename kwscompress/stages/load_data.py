"""The load_data stage: find (or make) the dataset and choose the clips of each split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kwscompress.config import DataConfig
from kwscompress.data.dataset import DatasetIndex, index_dataset
from kwscompress.protocols import DatasetSource


def load_data(
    source: DatasetSource, config: DataConfig, cache_dir: Path
) -> tuple[DatasetIndex, dict[str, Any]]:
    """Prepare the source's folder, index it, and summarise what was chosen."""
    root = source.prepare(config, cache_dir)
    index = index_dataset(root, config)
    summary = {
        "source": source.name,
        "root": str(root),
        "labels": index.labels,
        "background_files": len(index.background_files),
        "split_summary": index.split_summary(),
        "skipped_files": list(index.skipped_files),
        "skipped_count": len(index.skipped_files),
    }
    return index, summary
