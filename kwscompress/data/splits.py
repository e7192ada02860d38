"""The Speech Commands split rule: a speaker's clips all land in the same split.

The rule hashes the file name with everything from ``_nohash_`` on removed, so every clip of one
speaker goes to the same split, and a file keeps its split as the dataset grows. The dataset's own
``validation_list.txt`` and ``testing_list.txt`` agree with it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePath

MAX_NUM_WAVS_PER_CLASS = 2**27 - 1
SPLITS = ("training", "validation", "testing")


def speaker_of(filename: str) -> str:
    """The part of a clip's base name that the hash sees: everything before ``_nohash_``."""
    return re.sub(r"_nohash_.*$", "", PurePath(filename).name)


def which_set(filename: str, validation_percentage: float, testing_percentage: float) -> str:
    """Return ``training``, ``validation`` or ``testing`` for a clip's file name."""
    digest = hashlib.sha1(speaker_of(filename).encode("utf-8")).hexdigest()
    percentage = (int(digest, 16) % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "testing"
    return "training"
