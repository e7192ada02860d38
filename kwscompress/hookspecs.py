"""Every hook kwscompress calls, in one place.

A plugin is any module or object with functions named like the hooks below and decorated with
:data:`kwscompress.hookimpl`. Built-in plugins and third-party ones are found the same way:
through the ``kwscompress`` entry point group (see :doc:`/plugins`).

There are two kinds of hook:

* **Registration hooks** (``kws_register_*``) hand back components by name. Each returns a list
  of objects that satisfy the matching Protocol in :mod:`kwscompress.protocols`. The user picks a
  component by its ``name`` in the config; two components of one kind with the same name are an
  error that names both plugins.
* **Lifecycle hooks** (``kws_stage_*``, ``kws_variant_finished``) let observers act: loggers,
  trackers, progress displays. Their return values are ignored. An observer that raises is
  reported by plugin name in ``results.json`` and the run carries on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from kwscompress.protocols import (
        Backend,
        DatasetSource,
        Estimator,
        Executor,
        Exporter,
        FeatureExtractor,
        McuRuntime,
        ModelSpec,
        Pruner,
        Quantizer,
        ReportSection,
    )
    from kwscompress.run import Run

hookspec = pluggy.HookspecMarker("kwscompress")


@hookspec
def kws_register_datasets() -> list[DatasetSource]:
    """Return dataset sources: where the clips of a run come from.

    A source turns the ``[data]`` config into the root of a directory in the Speech Commands
    layout. Built-in: ``synthetic`` (offline speech made with espeak-ng) and ``speech_commands``
    (a copy the user already has on disk).
    """


@hookspec
def kws_register_feature_extractors() -> list[FeatureExtractor]:
    """Return feature extractors: clips of audio in, ``[N, frames, bins]`` features out.

    Built-in: ``micro`` (the TFLM micro frontend, what the device computes), ``spectrogram``,
    ``mel`` and ``mfcc``.
    """


@hookspec
def kws_register_models() -> list[ModelSpec]:
    """Return model architectures that can be built for a feature shape and a class count.

    Built-in: ``tc_ds_cnn`` (the temporal DS-CNN, the default), ``tiny_conv`` (TFLM's
    micro_speech model) and ``ds_cnn`` (DS-CNN small from "Hello Edge").
    """


@hookspec
def kws_register_estimators() -> list[Estimator]:
    """Return estimators: static cost analysis of a model (parameters, MACs, memory)."""


@hookspec
def kws_register_quantizers() -> list[Quantizer]:
    """Return quantizers: methods that turn a float model into a quantized variant."""


@hookspec
def kws_register_pruners() -> list[Pruner]:
    """Return pruners: methods that remove weights or whole channels from a model."""


@hookspec
def kws_register_exporters() -> list[Exporter]:
    """Return exporters: a variant to a deployable file, checked against the model.

    Built-in: ``onnx`` and ``tflite`` (full int8, verified in TFLM).
    """


@hookspec
def kws_register_backends() -> list[Backend]:
    """Return firmware backends: render a project around an exported model.

    Built-in: ``arduino`` (a sketch for the Nano 33 BLE Sense).
    """


@hookspec
def kws_register_mcu_runtimes() -> list[McuRuntime]:
    """Return MCU runtimes: flash, RAM and latency of an int8 model measured without a board.

    Built-in: ``native`` (generated int8 C kernels, cross-compiled and run in an emulated
    Cortex-M4).
    """


@hookspec
def kws_register_executors() -> list[Executor]:
    """Return sweep executors: run compression variants here, in worker processes or on a cluster.

    Built-in: ``local`` (this process, or a pool of worker processes) and ``ray``.
    """


@hookspec
def kws_register_report_sections() -> list[ReportSection]:
    """Return report sections: each renders one part of ``report.html`` from a finished run."""


@hookspec
def kws_stage_started(stage: str, run: Run) -> None:
    """Called when a pipeline stage begins.

    :param stage: the stage name, which is also its key in ``results.json``
        (``data``, ``features``, ``train``, ``evaluate``, ...).
    :param run: the run directory the stage writes into.
    """


@hookspec
def kws_stage_finished(stage: str, run: Run, summary: dict[str, Any]) -> None:
    """Called when a pipeline stage ends successfully.

    :param stage: the stage name.
    :param run: the run directory.
    :param summary: the JSON-ready summary the stage recorded in ``results.json``.
    """


@hookspec
def kws_variant_finished(variant: str, metrics: dict[str, Any], run: Run) -> None:
    """Called when a model variant has been evaluated.

    The trained float model is the first variant; compressed variants follow in later stages.

    :param variant: the variant's name (for example ``tiny_conv`` or ``tiny_conv-qat-4b``).
    :param metrics: its measured metrics as written to ``results.json``.
    :param run: the run directory.
    """
