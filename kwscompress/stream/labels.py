"""Label files of a stream's words, in Audacity's label-track format.

One label per line: start and end in seconds and the label, separated by tabs
(``12.340000<TAB>12.810000<TAB>yes``), as Audacity exports a label track (*File > Export >
Export Labels*) and imports one (*File > Import > Labels*). A label whose start equals its end
is a point. Lines starting with a backslash (the frequency range of a spectral selection) and
empty lines are skipped.

The stream stage writes each stream's words and the recognizer's detections in this format beside
the stream's audio (``[stream] save_audio``), so a stream can be listened to with its words and
detections shown on label tracks; ``kwscompress stream`` reads a recording's words from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from kwscompress.errors import KwsError
from kwscompress.run import atomic_open
from kwscompress.stream.builder import Event


def read_labels(
    path: Path, keywords: Sequence[str], kinds: Mapping[str, str] | None = None
) -> list[Event]:
    """The words of a label file as stream events, in time order.

    A label that is one of ``keywords`` (letter case and surrounding spaces ignored) is a
    ``keyword`` event of that keyword; any other label is a word of the kind ``kinds`` gives it
    (``confusable``, ``filler``, ...: a run's words, as its rejection record lists them), else
    ``other``. A false accept is reported against the word and kind it fired on.

    :raises KwsError: the file cannot be read, or a line is not ``start<TAB>end<TAB>label``
        with ``0 <= start <= end`` (the message names the file and line).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise KwsError(f"cannot read the label file {str(path)!r}: {exc}") from None
    wanted = {k.strip().lower(): k for k in keywords}
    events = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("\\"):
            continue
        fields = line.split("\t")
        try:
            start, end = float(fields[0]), float(fields[1])
            label = fields[2].strip()
        except (IndexError, ValueError):
            raise KwsError(
                f"{path}:{number}: expected 'start<TAB>end<TAB>label' (seconds, as Audacity "
                f"exports a label track), got {line!r}"
            ) from None
        if not 0 <= start <= end or not label:
            raise KwsError(
                f"{path}:{number}: a label needs 0 <= start <= end and a name, got {line!r}"
            )
        keyword = wanted.get(label.lower())
        events.append(
            Event(
                word=keyword or label,
                kind="keyword" if keyword else (kinds or {}).get(label, "other"),
                start_ms=start * 1000,
                end_ms=end * 1000,
                file=path.name,
            )
        )
    return sorted(events, key=lambda e: (e.start_ms, e.end_ms))


def write_labels(path: Path, labels: Iterable[tuple[float, float, str]]) -> Path:
    """Write ``(start_ms, end_ms, label)`` rows as an Audacity label file, atomically."""
    with atomic_open(Path(path)) as handle:
        handle.writelines(f"{s / 1000:.6f}\t{e / 1000:.6f}\t{label}\n" for s, e, label in labels)
    return Path(path)
