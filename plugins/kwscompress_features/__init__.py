"""Built-in feature extractors (a plugin, registered through the ``kwscompress`` entry point group).

``micro`` (the default)
    The TFLM micro frontend with the device's settings: what the board computes from its
    microphone (:mod:`kwscompress_features.micro`).
``spectrogram``, ``mel``, ``mfcc``
    Log-spectral features through torchaudio, framed the same way
    (:mod:`kwscompress_features.spectral`).

See :doc:`/features`.
"""

from __future__ import annotations

from kwscompress import hookimpl
from kwscompress.protocols import FeatureExtractor
from kwscompress_features.micro import MicroFrontend, quantize_for_device
from kwscompress_features.spectral import LogMel, LogSpectrogram, Mfcc

__all__ = ["LogMel", "LogSpectrogram", "Mfcc", "MicroFrontend", "quantize_for_device"]


@hookimpl
def kws_register_feature_extractors() -> list[FeatureExtractor]:
    """The built-in feature extractors: ``micro``, ``spectrogram``, ``mel`` and ``mfcc``."""
    return [MicroFrontend(), LogSpectrogram(), LogMel(), Mfcc()]
