"""Built-in dataset sources (a plugin, registered through the ``kwscompress`` entry point group).

``synthetic``
    The embedded offline dataset: speech synthesized with espeak-ng (and optionally Flite) in the
    Speech Commands layout, cached under the cache directory by a hash of its settings, so it is
    made once.
``speech_commands``
    A Speech Commands copy (v0.02 or anything in its layout) the user already has at ``root``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from kwscompress import hookimpl
from kwscompress.config import DataConfig
from kwscompress.errors import ConfigError
from kwscompress.progress import progress_bar
from kwscompress.run import file_lock


class SyntheticSource:
    """Speech Commands-style data made offline with espeak-ng (and optionally Flite)."""

    name = "synthetic"
    description = "offline synthetic Speech Commands (espeak-ng voices, noise, room effects)"

    def prepare(self, config: DataConfig, cache_dir: Path) -> Path:
        """Synthesize the dataset into the cache unless an identical one is there already."""
        from kwscompress.data import synth

        settings = {
            "synth": vars(config.synth),
            "wanted_words": config.wanted_words,
            "validation_percentage": config.validation_percentage,
            "testing_percentage": config.testing_percentage,
            "generator": synth.generator_fingerprint(config.synth),
        }
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        root = cache_dir / "synth" / key
        if root.is_dir():
            return root
        # Runs sharing a cache: the second waits for the first, then uses its dataset.
        with file_lock(root.parent / f".{key}.lock", f"synthesizing the dataset into {root}"):
            if not root.is_dir():
                synthesize_dataset(root, config)
        return root


def synthesize_dataset(root: Path, config: DataConfig) -> dict[str, Any]:
    """Write the synthetic dataset of ``config`` into ``root``, with a progress bar."""
    from kwscompress.data import synth

    total = synth.planned_clip_count(config.synth, config.wanted_words)
    with progress_bar("Synthesizing speech", total) as advance:
        return synth.synthesize(
            root,
            config.synth,
            config.wanted_words,
            validation_percentage=config.validation_percentage,
            testing_percentage=config.testing_percentage,
            progress=advance,
        )


class SpeechCommandsSource:
    """A Speech Commands folder on disk."""

    name = "speech_commands"
    description = "Speech Commands (v0.02 layout) already on disk at data.root"

    def prepare(self, config: DataConfig, cache_dir: Path) -> Path:
        """Return ``data.root``; the reader checks the layout."""
        if not config.root:
            raise ConfigError(
                "data.root is empty; set it to the folder holding the Speech Commands word "
                "folders, or use data.source = 'synthetic'"
            )
        return Path(config.root).expanduser()


@hookimpl
def kws_register_datasets() -> list[object]:
    """The built-in dataset sources."""
    return [SyntheticSource(), SpeechCommandsSource()]
