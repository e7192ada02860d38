"""Build the generated C: a host shared library (run through ctypes) and a Cortex-M4F ELF.

The cross build uses ziglang from PyPI (``python -m ziglang cc``: clang + lld for
``thumb-freestanding-eabihf``), a tiny startup file (vector table, reset handler that copies
``.data`` and zeroes ``.bss``, ``memcpy``/``memset``) and a linker script that places
``.text``/``.rodata`` in flash and ``.data``/``.bss`` in RAM. Section sizes are read from the
ELF with pyelftools.
"""

from __future__ import annotations

import ctypes
import shutil
import string
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from kwscompress.errors import KwsError
from kwscompress.run import atomic_path
from kwscompress_native.codegen import GeneratedModel

CROSS_TARGET = "thumb-freestanding-eabihf"
CROSS_FLAGS = [
    "-mcpu=cortex_m4",
    "-O2",
    "-std=c99",
    "-ffreestanding",
    "-fno-builtin",
    "-ffunction-sections",
    "-fdata-sections",
    "-fno-strict-aliasing",
    "-nostdlib",
]
# The kernels view the one int8 arena as int16 images and int32 words: no strict aliasing.
HOST_FLAGS = ["-O2", "-std=c99", "-fno-strict-aliasing", "-shared", "-fPIC"]
FLASH_ORIGIN, FLASH_BYTES = 0x00000000, 1024 * 1024
RAM_ORIGIN, RAM_BYTES = 0x20000000, 256 * 1024
STACK_BYTES = 4096


def write_sources(gen: GeneratedModel, out_dir: Path) -> dict[str, Path]:
    """Write ``model.c``, ``kws_kernels.h``, ``startup.c`` and ``link.ld`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"model": out_dir / "model.c"}
    _write(files["model"], gen.source)
    templates = resources.files("kwscompress_native") / "templates"
    for kind, name in (("kernels", "kws_kernels.h"), ("startup", "startup.c")):
        files[kind] = out_dir / name
        _write(files[kind], templates.joinpath(name).read_text("utf-8"))
    files["linker_script"] = out_dir / "link.ld"
    script = string.Template(templates.joinpath("link.ld").read_text("utf-8"))
    _write(
        files["linker_script"],
        script.substitute(
            flash_origin=FLASH_ORIGIN,
            flash_bytes=FLASH_BYTES,
            ram_origin=RAM_ORIGIN,
            ram_bytes=RAM_BYTES,
            stack_bytes=STACK_BYTES,
        ),
    )
    return files


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, "utf-8")


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise KwsError(f"{what} failed ({' '.join(cmd[:4])} ...): {proc.stderr.strip()[-2000:]}")


def host_compiler() -> str:
    """The host C compiler (``cc`` or ``gcc``)."""
    for name in ("gcc", "cc"):
        if shutil.which(name):
            return name
    raise KwsError("no host C compiler (gcc or cc) on PATH; the host build needs one")


def build_host(files: dict[str, Path], out_dir: Path) -> Path:
    """Compile the model into a shared library with the host compiler."""
    lib = out_dir / "model_host.so"
    with atomic_path(lib) as tmp:
        _run([host_compiler(), *HOST_FLAGS, str(files["model"]), "-o", str(tmp)], "host build")
    return lib


class HostModel:
    """The host build, loaded with ctypes."""

    def __init__(self, lib: Path, gen: GeneratedModel):
        self._lib = ctypes.CDLL(str(lib))
        self._gen = gen
        self._in = int(np.prod(gen.input_shape))
        self._out = int(np.prod(gen.output_shape))

    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs ``[N, ...]`` for int8 inputs ``[N, ...]``."""
        x = np.ascontiguousarray(np.asarray(x, np.int8).reshape(len(x), self._in))
        out = np.zeros((len(x), self._out), np.int8)
        for i in range(len(x)):
            self._lib.kws_run(
                x[i].ctypes.data_as(ctypes.c_void_p),
                self._in,
                self._gen.input_offset,
                out[i].ctypes.data_as(ctypes.c_void_p),
                self._out,
                self._gen.output_offset,
            )
        return out.reshape(len(x), *self._gen.output_shape[1:])


def zig_version() -> str:
    """``python -m ziglang version``."""
    proc = subprocess.run(
        [sys.executable, "-m", "ziglang", "version"], capture_output=True, text=True
    )
    return proc.stdout.strip() or "unknown"


def build_cross(files: dict[str, Path], out_dir: Path) -> Path:
    """Cross-compile and link a Cortex-M4F ELF with zig cc."""
    elf = out_dir / "model_m4.elf"
    with atomic_path(elf) as tmp:
        cmd = [
            sys.executable, "-m", "ziglang", "cc", "-target", CROSS_TARGET, *CROSS_FLAGS,
            f"-I{out_dir}", str(files["startup"]), str(files["model"]),
            f"-Wl,-T,{files['linker_script']}", "-Wl,--gc-sections", "-o", str(tmp),
        ]  # fmt: skip
        _run(cmd, "zig cross build")
    return elf


def cross_command() -> str:
    """The compiler and flags of the cross build, for the record."""
    return f"zig {zig_version()} cc -target {CROSS_TARGET} " + " ".join(CROSS_FLAGS)


@dataclass
class ElfSizes:
    """Allocated section sizes of the ELF (bytes)."""

    text: int
    rodata: int
    data: int
    bss: int
    symbols: dict[str, tuple[int, int]]
    """Name -> (address, size) of every object and function symbol."""
    sections: dict[str, tuple[int, int]]
    """Name -> (address, size) of each allocated section."""


def elf_sizes(elf: Path) -> ElfSizes:
    """Section sizes and symbols of ``elf`` (pyelftools)."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    with open(elf, "rb") as handle:
        f = ELFFile(handle)
        sections = {
            s.name: (s["sh_addr"], s["sh_size"])
            for s in f.iter_sections()
            if s["sh_flags"] & 0x2  # SHF_ALLOC
        }
        symbols = {}
        for s in f.iter_sections():
            if isinstance(s, SymbolTableSection):
                for sym in s.iter_symbols():
                    if sym["st_info"]["type"] in ("STT_OBJECT", "STT_FUNC"):
                        symbols[sym.name] = (sym["st_value"], sym["st_size"])

    def size(prefix: str) -> int:
        return sum(v[1] for k, v in sections.items() if k == prefix or k.startswith(prefix + "."))

    return ElfSizes(
        text=size(".text") + size(".vectors"),
        rodata=size(".rodata"),
        data=size(".data"),
        bss=size(".bss"),
        symbols=symbols,
        sections=sections,
    )
