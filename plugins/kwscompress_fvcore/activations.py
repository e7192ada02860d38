"""Activation sizes and the peak of live activations, from forward hooks on the leaf modules.

The walk replays one forward pass as a sequence of steps, one per leaf-module call, and tracks
activation buffers by their storage: a view (``reshape``, ``flatten``) shares its input's buffer.
A buffer is live from the step that produces it to the last step that reads it; the model's input
is live from the start and its output to the end. Layers that a converter fuses into the layer
before them or removes (activations, dropout, batch norm, identity, flatten) are treated as in
place: their output reuses their input's buffer, as in the int8 model TFLM runs.

Operations written outside modules (a functional call or an addition in ``forward``) are not
steps of their own: their result is counted from the first module that reads it, and a buffer
that only such an operation reads is counted as dead once produced. Models built from modules,
like every built-in one, are walked exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

IN_PLACE_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.SiLU,
    nn.GELU,
    nn.ELU,
    nn.modules.dropout._DropoutNd,
    nn.modules.batchnorm._BatchNorm,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
)
"""Module types whose output is taken to overwrite their input (fused or removed on device)."""


@dataclass
class LayerCall:
    """What the hooks saw of one leaf module, over all its calls."""

    name: str
    """Name shown for the layer: the module's path, or its class name for the model itself."""
    module_name: str
    """The module's path in ``named_modules`` (``""`` for the model itself)."""
    type: str
    output_shape: list[int]
    """Shape of the first output tensor of the first call."""
    output_elements: int
    """Elements of all output tensors of the first call."""
    calls: int = 0
    total_output_elements: int = 0
    """Output elements summed over all calls."""
    total_output_channels: int = 0
    """Batch x channels (dimension 1) of the first output tensor, summed over all calls."""
    live_elements: int = 0
    """Most activation elements live during any of its calls."""


@dataclass
class ActivationWalk:
    """Result of :func:`walk_activations`."""

    layers: list[LayerCall]
    input_elements: int
    output_elements: int
    peak_live_elements: int
    peak_at_layer: str


@dataclass
class _Buffer:
    elements: int
    first: int
    last: int


@dataclass
class _Recorder:
    steps: list[str] = field(default_factory=list)
    buffers: dict[int, _Buffer] = field(default_factory=dict)
    aliases: dict[int, int] = field(default_factory=dict)
    keep_alive: list[torch.Tensor] = field(default_factory=list)

    def buffer_of(self, tensor: torch.Tensor, step: int) -> int:
        # Holding every tensor keeps storages from being freed and their addresses reused.
        self.keep_alive.append(tensor)
        key = tensor.untyped_storage().data_ptr()
        key = self.aliases.get(key, key)
        if key not in self.buffers:
            elements = tensor.untyped_storage().nbytes() // tensor.element_size()
            self.buffers[key] = _Buffer(elements, step, step)
        return key


def walk_activations(model: nn.Module, example: torch.Tensor) -> ActivationWalk:
    """Run ``model`` once on ``example`` and measure activation sizes and their live peak.

    The model should be in eval mode; the caller restores its mode.
    """
    names = {module: name for name, module in model.named_modules()}
    leaves = [m for m in model.modules() if not list(m.children()) and m is not model]
    if not leaves:
        leaves = [model]
    recorder = _Recorder()
    layers: dict[str, LayerCall] = {}
    input_key = recorder.buffer_of(example, -1)

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        step = len(recorder.steps)
        name = names[module] or type(module).__name__
        reads = [recorder.buffer_of(t, step) for t in _tensors(inputs)]
        outputs = _tensors(output)
        for tensor in outputs:
            if isinstance(module, IN_PLACE_TYPES) and reads:
                recorder.aliases.setdefault(tensor.untyped_storage().data_ptr(), reads[0])
            recorder.buffer_of(tensor, step)
        for key in reads:
            recorder.buffers[key].last = step
        recorder.steps.append(name)
        elements = sum(t.numel() for t in outputs)
        if name not in layers:
            layers[name] = LayerCall(
                name=name,
                module_name=names[module],
                type=type(module).__name__,
                output_shape=list(outputs[0].shape) if outputs else [],
                output_elements=elements,
            )
        layer = layers[name]
        layer.calls += 1
        layer.total_output_elements += elements
        if outputs:
            shape = outputs[0].shape
            layer.total_output_channels += shape[0] * shape[1] if len(shape) > 1 else shape.numel()

    handles = [leaf.register_forward_hook(hook) for leaf in leaves]
    try:
        with torch.no_grad():
            result = model(example)
    finally:
        for handle in handles:
            handle.remove()

    end = len(recorder.steps)
    result_tensors = _tensors(result)
    for tensor in result_tensors:
        recorder.buffers[recorder.buffer_of(tensor, end)].last = end
    recorder.buffers[input_key].first = -1

    peak, peak_at = 0, ""
    for step, name in enumerate(recorder.steps):
        live = sum(b.elements for b in recorder.buffers.values() if b.first <= step <= b.last)
        layers[name].live_elements = max(layers[name].live_elements, live)
        if live > peak:
            peak, peak_at = live, name
    return ActivationWalk(
        layers=list(layers.values()),
        input_elements=example.numel(),
        output_elements=sum(t.numel() for t in result_tensors),
        peak_live_elements=peak,
        peak_at_layer=peak_at,
    )


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [t for item in value for t in _tensors(item)]
    return []
