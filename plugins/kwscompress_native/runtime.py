"""The ``native`` component: generate C for a variant, build it, check it, emulate it, count.

``NativeRuntime().measure(...)`` returns the ``mcu`` record of a variant's row. Every number in
it is measured here (ELF section sizes, emulated instruction counts, agreement with TFLM) except
``cycles`` and ``ms_at_clock``, which apply the documented cycle model to the measured
instruction stream: an emulator estimate, never a board measurement.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from kwscompress.errors import KwsError
from kwscompress_native import emulator, toolchain
from kwscompress_native.codegen import GeneratedModel, generate
from kwscompress_native.tflite_model import read_model


def tflm_outputs(
    tflite_bytes: bytes, inputs: np.ndarray, input_shape: tuple[int, ...]
) -> np.ndarray:
    """Run every input through TFLM's Python interpreter (reference kernels)."""
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(tflite_bytes)
    outputs = []
    for x in inputs:
        interpreter.set_input(np.asarray(x, np.int8).reshape(input_shape), 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0), np.int8).reshape(-1))
    return np.stack(outputs)


class NativeRuntime:
    """Generated int8 C kernels, cross-compiled for Cortex-M4F and run in an emulator."""

    name = "native"
    description = (
        "generated C99 int8 kernels (SMLAD SIMD): host build checked against TFLM, zig cross "
        "build for Cortex-M4F (ELF sizes), unicorn emulation (instructions, modelled cycles)"
    )

    def measure(
        self,
        tflite_path: Path,
        int8_inputs: np.ndarray,
        out_dir: Path,
        weight_bits: int = 8,
        clock_hz: int = 64_000_000,
        emulate_clips: int = 3,
    ) -> dict[str, Any]:
        """Generate, build, verify and emulate ``tflite_path``; return the ``mcu`` record.

        :param int8_inputs: ``[N, ...]`` int8 model inputs (N >= 1), e.g. quantized test clips.
        :param out_dir: where the sources, the host library and the ELF are written.
        :param weight_bits: stored weight width; 2..4 packs two weights per byte. Every weight
            must fit the width (a wider weight raises :class:`KwsError`).
        :param emulate_clips: how many of the inputs run in the emulator (the first ones).
        """
        tflite_path, out_dir = Path(tflite_path), Path(out_dir)
        if not tflite_path.is_file():
            raise KwsError(f"{tflite_path} does not exist; pass the variant's .tflite file")
        gen = generate(read_model(tflite_path), weight_bits)
        inputs = _as_inputs(int8_inputs, gen, tflite_path)
        files = toolchain.write_sources(gen, out_dir)
        # The cross build is a compiler process of its own: it runs while this one builds and
        # checks the host build (the demo's MCU stage on two cores: 29.5 -> 17.3 s).
        with ThreadPoolExecutor(max_workers=1) as pool:
            cross = pool.submit(toolchain.build_cross, files, out_dir)
            host = toolchain.HostModel(toolchain.build_host(files, out_dir), gen)
            host_out = host.run(inputs).reshape(len(inputs), -1)
            ref_out = tflm_outputs(tflite_path.read_bytes(), inputs, gen.input_shape)
            agree = np.all(host_out == ref_out, axis=1)
            elf = cross.result()
        sizes = toolchain.elf_sizes(elf)
        emu = emulator.Emulator(elf)
        runs = []
        out_size = int(np.prod(gen.output_shape))
        for i in range(min(max(emulate_clips, 0), len(inputs))):
            result = emu.run(inputs[i], gen.input_offset, gen.output_offset, out_size)
            # An emulated clip counts as exact only if the M4 build also gives the same bytes.
            result.matches_host = bool(np.array_equal(result.output, host_out[i]))
            agree[i] &= result.matches_host
            runs.append(result)
        return _record(gen, files, out_dir, elf, sizes, runs, agree, clock_hz)


def _as_inputs(x: np.ndarray, gen: GeneratedModel, path: Path) -> np.ndarray:
    x = np.asarray(x)
    per_input = int(np.prod(gen.input_shape))
    if x.dtype != np.int8 or x.ndim < 1 or len(x) == 0 or x[0].size != per_input:
        raise KwsError(
            f"inputs for {path.name} must be int8 [N, ...] with {per_input} values per input "
            f"(model input {list(gen.input_shape)}); got {x.dtype} {list(x.shape)}"
        )
    return np.ascontiguousarray(x.reshape(len(x), per_input))


def _record(
    gen: GeneratedModel,
    files: dict[str, Path],
    out_dir: Path,
    elf: Path,
    sizes: toolchain.ElfSizes,
    runs: list[emulator.EmulationResult],
    agree: np.ndarray,
    clock_hz: int,
) -> dict[str, Any]:
    instructions = round(float(np.mean([r.instructions for r in runs]))) if runs else None
    cycles = round(float(np.mean([r.cycles for r in runs]))) if runs else None
    stack = max((r.stack_bytes for r in runs), default=0)
    macs = gen.macs
    return {
        "text_bytes": sizes.text,
        "rodata_bytes": sizes.rodata,
        "data_bytes": sizes.data,
        "bss_bytes": sizes.bss,
        "flash_bytes": sizes.text + sizes.rodata + sizes.data,
        "stack_bytes": stack,
        "ram_bytes": sizes.data + sizes.bss + stack,
        "activation_buffer_bytes": gen.arena_bytes,
        "weight_bits": gen.weight_bits,
        "weight_bytes": gen.weight_bytes,
        "constant_bytes": gen.constant_bytes,
        "macs": macs,
        "instructions": instructions,
        "instructions_per_mac": instructions / macs if instructions and macs else None,
        "instructions_range": [min(r.instructions for r in runs), max(r.instructions for r in runs)]
        if runs
        else None,
        "cycles": cycles,
        "cycles_per_mac": cycles / macs if cycles and macs else None,
        "ms_at_clock": 1000.0 * cycles / clock_hz if cycles else None,
        "clock_hz": clock_hz,
        "flash_data_reads": runs[0].flash_reads if runs else None,
        "taken_branches": runs[0].taken_branches if runs else None,
        "host_seconds_per_emulated_inference": float(np.mean([r.host_seconds for r in runs]))
        if runs
        else None,
        "bit_exact": float(np.mean(agree)),
        "compared_inputs": len(agree),
        "emulated_clips": len(runs),
        "emulated_match_host": all(r.matches_host for r in runs),
        "cycle_model": {
            "name": emulator.CYCLE_MODEL,
            "branch_refill_cycles": emulator.BRANCH_REFILL,
            "flash_wait_states": emulator.FLASH_WAIT_STATES,
            "divide_cycles": emulator.DIVIDE_CYCLES,
            "estimate": True,
        },
        "compiler": {
            "cross": toolchain.cross_command(),
            "host": " ".join([toolchain.host_compiler(), *toolchain.HOST_FLAGS]),
        },
        "instructions_by_function": runs[0].per_function if runs else None,
        "layers": [
            {
                "op": layer.op,
                "kernel": layer.kernel,
                "macs": layer.macs,
                "weight_bytes": layer.weight_bytes,
            }
            for layer in gen.layers
        ],
        "files": {
            kind: str(path.relative_to(out_dir)) for kind, path in {**files, "elf": elf}.items()
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
