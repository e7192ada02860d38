"""Run a model over a stream the way the device does: a window per new slice, then the recognizer.

The device (TFLM micro_speech) keeps one frontend running over the microphone's samples and
keeps the last 49 slices; after each new 20 ms slice it may run the model on those 49 slices.
Here the frontend runs once over the whole stream, which gives the same slices: the device's
``FeatureProvider`` feeds the frontend each new slice's fresh samples (the first 160 samples of
a 30 ms window are already inside the frontend's window buffer), so its noise estimate and gain
state run on continuously exactly as one pass over the stream does. What differs from training
is the *start* of that state: training clips each start a fresh frontend (the noise estimate
starts at zero), while in a stream it has settled on the background; the stream evaluation
measures the model with the device's state, not the training one.

Inference ``k`` covers slices ``[i - frames + 1, i]`` for every ``slices_per_inference``-th
slice ``i``; its time is the end of slice ``i`` in milliseconds. Scores are the softmax output
mapped to int8 as the int8 model's output tensor holds it (scale 1/256, zero point -128).

The scores come from a :data:`Scorer`: a PyTorch model's (:func:`torch_scorer`, the trained
model) or a full-int8 ``.tflite`` file's as TensorFlow Lite runs it (:func:`tflite_scorer`, the
exact file a deployed variant's firmware embeds).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kwscompress.errors import KwsError
from kwscompress.intgraph import int8_codes
from kwscompress.protocols import FeatureExtractor
from kwscompress.train import predict

BATCH = 2048
"""Windows per forward pass."""

Scorer = Callable[[np.ndarray], np.ndarray]
"""Float feature windows ``[N, frames, bins]`` to int8 scores ``[N, classes]`` (scale 1/256,
zero point -128)."""


def stream_features(
    audio: np.ndarray, extractor: FeatureExtractor, features: Any, sample_rate: int
) -> np.ndarray:
    """Frontend features ``[slices, bins]`` of a whole stream, in one continuous pass."""
    return np.asarray(extractor.extract(audio[np.newaxis], features, sample_rate)[0], np.float32)


def device_samples(audio: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as the int16 samples a microphone would deliver: times 32768,
    clipped, truncated toward zero, as the ``micro`` extractor converts them. Written to a
    16-bit WAV and read back, they give that extractor exactly the same features."""
    return np.clip(audio * 32768.0, -32768, 32767).astype(np.int16)


def window_frames(clip_duration_ms: float, window_ms: float, stride_ms: float) -> int:
    """Slices in one model window: as many as a clip of ``clip_duration_ms`` has."""
    return 1 + int((clip_duration_ms - window_ms) // stride_ms)


def window_times_ms(
    slices: int, frames: int, stride_ms: float, window_ms: float, every: int
) -> np.ndarray:
    """Times (end of the newest slice, ms) of the windows scored: one per ``every`` slices."""
    last = np.arange(frames - 1, slices, every)
    return np.round(last * stride_ms + window_ms).astype(np.int64)


def to_int8_scores(probabilities: np.ndarray) -> np.ndarray:
    """Softmax probabilities as int8 codes at scale 1/256, zero point -128 (saturating)."""
    return np.clip(np.round(probabilities * 256.0) - 128, -128, 127).astype(np.int8)


def torch_scorer(model: torch.nn.Module) -> Scorer:
    """Scores of a PyTorch model: its softmax as int8 codes (:func:`to_int8_scores`)."""
    return lambda windows: to_int8_scores(predict(model, windows))


def tflite_scorer(path: Path) -> Scorer:
    """Scores of a full-int8 ``.tflite`` model, one invoke per window as on the device.

    TensorFlow Lite's built-in kernels without XNNPACK run it: the export stage compares them
    with TFLM on the test clips (``tflm_vs_tflite_optimized``; their int8 softmax can differ
    from TFLM's by one code). Windows are quantized with the model's own input scale and
    zero point (round half to even, saturating, as the export's checks do) and laid out as
    its input (frames by bins, row-major); output codes at another scale are mapped to the
    recognizer's 1/256.

    :raises KwsError: the file's input or output is not int8.
    """
    from kwscompress.tf_import import import_tensorflow

    tf = import_tensorflow()
    with warnings.catch_warnings():
        # tf.lite.Interpreter announces its move to ai_edge_litert; it still runs here.
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(
            model_path=str(path),
            experimental_op_resolver_type=(
                tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            ),
        )
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    if source["dtype"] != np.int8 or target["dtype"] != np.int8:
        kinds = f"input {source['dtype'].__name__}, output {target['dtype'].__name__}"
        raise KwsError(f"{path} is not a full-int8 model: {kinds}")
    in_scale, in_zero = source["quantization"]
    out_scale, out_zero = target["quantization"]
    shape = tuple(source["shape"][1:])

    def score(windows: np.ndarray) -> np.ndarray:
        codes = int8_codes(windows, in_scale, in_zero).reshape(len(windows), *shape)
        out = np.empty((len(windows), target["shape"][-1]), np.int8)
        for i, window in enumerate(codes):
            interpreter.set_tensor(source["index"], window[np.newaxis])
            interpreter.invoke()
            out[i] = interpreter.get_tensor(target["index"])[0]
        if (out_scale, out_zero) == (1 / 256, -128):
            return out
        return to_int8_scores(out_scale * (out.astype(np.float32) - out_zero))

    return score


def stream_scores(
    model: torch.nn.Module | Scorer,
    slices: np.ndarray,
    frames: int,
    stride_ms: float,
    window_ms: float,
    every: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Score every ``every``-th window of ``frames`` slices; return ``(times_ms, int8 scores)``.

    :param model: a PyTorch model (scored by :func:`torch_scorer`) or any :data:`Scorer`.

    :param slices: stream features ``[slices, bins]``.
    :raises KwsError: the stream is shorter than one window or ``every`` is below 1.
    """
    if every < 1:
        raise KwsError(f"stream.slices_per_inference must be at least 1, got {every}")
    if len(slices) < frames:
        raise KwsError(f"the stream has {len(slices)} slices, fewer than one window ({frames})")
    times = window_times_ms(len(slices), frames, stride_ms, window_ms, every)
    windows = np.lib.stride_tricks.sliding_window_view(slices, frames, axis=0)[::every]
    # sliding_window_view puts the window axis last: [windows, bins, frames].
    score = torch_scorer(model) if isinstance(model, torch.nn.Module) else model
    parts = []
    for start in range(0, len(windows), BATCH):
        batch = np.ascontiguousarray(windows[start : start + BATCH].transpose(0, 2, 1))
        parts.append(score(batch))
    return times, np.concatenate(parts)


def fresh_frontend_difference(
    audio: np.ndarray,
    slices: np.ndarray,
    last_slices: np.ndarray,
    extractor: FeatureExtractor,
    features: Any,
    sample_rate: int,
    frames: int,
) -> dict[str, float | int]:
    """How far the stream's windows are from the same audio featurized as a clip.

    A training clip starts the frontend afresh (after the ``micro`` extractor's warm-up, if
    ``features.warmup_ms`` asks for one); in a stream (and on the device) its noise estimate
    and gain have been running. For each window ending at one of ``last_slices`` the same
    samples are featurized as a clip, and the mean absolute difference is returned with the
    mean feature value for scale.
    """
    stride = round(sample_rate * features.stride_ms / 1000)
    window = round(sample_rate * features.window_ms / 1000)
    length = (frames - 1) * stride + window
    chosen = [int(i) for i in last_slices if i >= frames - 1]
    if not chosen:
        return {"windows": 0, "mean_abs_difference": 0.0, "mean_feature": 0.0}
    clips = np.stack([audio[(i - frames + 1) * stride :][:length] for i in chosen])
    fresh = np.asarray(extractor.extract(clips, features, sample_rate), np.float32)
    stream = np.stack([slices[i - frames + 1 : i + 1] for i in chosen])
    return {
        "windows": len(chosen),
        "mean_abs_difference": float(np.abs(fresh - stream).mean()),
        "mean_feature": float(np.abs(stream).mean()),
    }
