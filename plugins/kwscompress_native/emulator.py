"""Run the cross-compiled inference in an emulated Cortex-M4 and count what it executes.

unicorn runs the ELF (Thumb, M-class, CPU model Cortex-M4). A block hook counts executions of
each translation block; capstone disassembles every block once, the first time it is seen, and
the per-block instruction count and cycle cost are looked up from then on, so the hook costs one
dictionary update per executed block, not per instruction. Reads from flash are counted with a
memory hook limited to the flash range (they pay the flash wait states).

Cycle model ``cm4-trm-v1`` (Cortex-M4 Technical Reference Manual r0p1, table 3-1 "Cortex-M4
instruction set summary"; details and assumptions in docs/mcu.rst):

======================================  =================================================
instruction class                       cycles
======================================  =================================================
data processing, SIMD, extend, IT        1
MUL/MLA/SMLAD/SMLAL/SMULL/... (MAC)      1
SDIV/UDIV                                2-12, taken as 7 (data-dependent early exit)
LDR/STR (byte, half, word)               2, or 1 when it follows another load/store
LDRD/STRD                                3 (1 + N, N = 2)
LDM/STM/PUSH/POP                         1 + N registers
branch, not taken                        1
branch, taken (incl. BL, BX, POP {pc})   1 + P, P = 2 (refill, TRM: 1 to 3)
flash data read                          + W flash wait states (W = 1, see docs)
======================================  =================================================

An estimate, not a board measurement: it ignores instruction-fetch stalls beyond the branch
refill, bus contention and the instruction cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kwscompress.errors import KwsError
from kwscompress_native.toolchain import FLASH_BYTES, FLASH_ORIGIN, RAM_BYTES, RAM_ORIGIN

CYCLE_MODEL = "cm4-trm-v1"
BRANCH_REFILL = 2
FLASH_WAIT_STATES = 1
DIVIDE_CYCLES = 7
STACK_PAINT = 0xA5

_SINGLE_LDST = {
    "ldr", "ldrb", "ldrh", "ldrsb", "ldrsh", "ldrt", "ldrbt", "ldrht", "ldrsbt", "ldrsht",
    "str", "strb", "strh", "strt", "strbt", "strht", "ldrex", "ldrexb", "ldrexh", "strex",
    "strexb", "strexh", "vldr", "vstr", "pld",
}  # fmt: skip
_DOUBLE_LDST = {"ldrd", "strd"}
_MULTI_LDST = {
    "ldm", "ldmia", "ldmdb", "ldmfd", "stm", "stmia", "stmdb", "stmea", "push", "pop",
    "vpush", "vpop", "vldmia", "vldmdb", "vstmia", "vstmdb",
}  # fmt: skip
_DIVIDES = {"sdiv", "udiv"}
_CONDS = (
    "eq", "ne", "cs", "hs", "cc", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt", "gt",
    "le", "al",
)  # fmt: skip


@dataclass
class EmulationResult:
    """Counts of one emulated inference."""

    output: np.ndarray
    instructions: int
    cycles: int
    blocks: int
    taken_branches: int
    flash_reads: int
    stack_bytes: int
    host_seconds: float
    mnemonics: dict[str, int] = field(default_factory=dict)
    matches_host: bool | None = None
    """Set by the caller once compared with the host build."""
    per_function: dict[str, int] = field(default_factory=dict)
    """Instructions by the function symbol they executed in."""


_COSTED = _SINGLE_LDST | _DOUBLE_LDST | _MULTI_LDST | _DIVIDES | {"b", "bl", "bx", "blx"}


def _base(mnemonic: str) -> str:
    """The mnemonic without width qualifier, and without a condition code where it matters."""
    m = mnemonic.lower().split(".")[0]
    if m in _COSTED:
        return m
    for cond in _CONDS:
        # Conditional forms (``bne``, ``ldrbeq``) share their base instruction's cost.
        if m.endswith(cond) and m[: -len(cond)] in _COSTED:
            return m[: -len(cond)]
    return m


def _block_cost(insns: list) -> tuple[int, int, dict[str, int]]:
    """(instructions, cycles without branch refills / wait states, mnemonic counts)."""
    cycles, previous_ldst = 0, False
    mnemonics: dict[str, int] = {}
    for insn in insns:
        base = _base(insn.mnemonic)
        mnemonics[base] = mnemonics.get(base, 0) + 1
        ldst = False
        if base in _SINGLE_LDST:
            cycles += 1 if previous_ldst else 2
            ldst = True
        elif base in _DOUBLE_LDST:
            cycles += 3
        elif base in _MULTI_LDST:
            regs = max(
                1,
                insn.op_str.count(",")
                + 1
                - (0 if base.startswith(("push", "pop", "vpush", "vpop")) else 1),
            )
            cycles += 1 + regs
        elif base in _DIVIDES:
            cycles += DIVIDE_CYCLES
        else:
            cycles += 1
        previous_ldst = ldst
    return len(insns), cycles, mnemonics


class Emulator:
    """A Cortex-M4 with the ELF's flash and RAM images loaded; call :meth:`run` per input."""

    def __init__(self, elf: Path):
        import capstone
        import unicorn
        from elftools.elf.elffile import ELFFile
        from elftools.elf.sections import SymbolTableSection
        from unicorn import arm_const

        self._uc_mod = unicorn
        self._disasm = capstone.Cs(
            capstone.CS_ARCH_ARM, capstone.CS_MODE_THUMB | capstone.CS_MODE_MCLASS
        )
        self.images: list[tuple[int, bytes]] = []
        self.symbols: dict[str, tuple[int, int]] = {}
        with open(elf, "rb") as handle:
            f = ELFFile(handle)
            for s in f.iter_sections():
                if s["sh_flags"] & 0x2 and s["sh_type"] != "SHT_NOBITS" and s["sh_size"]:
                    self.images.append((s["sh_addr"], s.data()))
                if isinstance(s, SymbolTableSection):
                    for sym in s.iter_symbols():
                        self.symbols[sym.name] = (sym["st_value"], sym["st_size"])
        for name in ("kws_invoke", "kws_halt", "kws_arena", "_ebss", "_estack"):
            if name not in self.symbols:
                raise KwsError(f"{elf} has no symbol {name!r}; was it built by kwscompress_native?")
        uc = unicorn.Uc(unicorn.UC_ARCH_ARM, unicorn.UC_MODE_THUMB | unicorn.UC_MODE_MCLASS)
        uc.ctl_set_cpu_model(arm_const.UC_CPU_ARM_CORTEX_M4)
        uc.mem_map(FLASH_ORIGIN, FLASH_BYTES, unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC)
        uc.mem_map(RAM_ORIGIN, RAM_BYTES, unicorn.UC_PROT_ALL)
        self.uc = uc
        self._functions = sorted(
            (name, (value & ~1, size))
            for name, (value, size) in self.symbols.items()
            if size and value < FLASH_ORIGIN + FLASH_BYTES and value & 1
        )
        self._blocks: dict[tuple[int, int], tuple[int, int, dict[str, int]]] = {}
        self._hits: dict[tuple[int, int], int] = {}
        self._flash_reads = 0
        self._taken = 0
        self._next = -1
        uc.hook_add(unicorn.UC_HOOK_BLOCK, self._on_block)
        uc.hook_add(
            unicorn.UC_HOOK_MEM_READ,
            self._on_flash_read,
            begin=FLASH_ORIGIN,
            end=FLASH_ORIGIN + FLASH_BYTES - 1,
        )
        self._arm = arm_const

    def _on_block(self, uc, address: int, size: int, user_data) -> None:
        key = (address, size)
        self._hits[key] = self._hits.get(key, 0) + 1
        # Control arrived from somewhere other than the previous block's end: a taken branch.
        if address != self._next:
            self._taken += 1
        self._next = address + size

    def _on_flash_read(self, uc, access, address, size, value, user_data) -> None:
        self._flash_reads += 1

    def _cost(self, key: tuple[int, int]) -> tuple[int, int, dict[str, int]]:
        cost = self._blocks.get(key)
        if cost is None:
            address, size = key
            code = bytes(self.uc.mem_read(address, size))
            cost = _block_cost(list(self._disasm.disasm(code, address)))
            self._blocks[key] = cost
        return cost

    def run(
        self, x: np.ndarray, input_offset: int, output_offset: int, output_size: int
    ) -> EmulationResult:
        """Load the images, place ``x`` in the arena, run ``kws_invoke`` once and count."""
        uc, arm = self.uc, self._arm
        arena = self.symbols["kws_arena"][0]
        stack_low = (self.symbols["_ebss"][0] + 7) & ~7
        stack_top = self.symbols["_estack"][0]
        uc.mem_write(RAM_ORIGIN, bytes(RAM_BYTES))
        for address, data in self.images:
            uc.mem_write(address, data)
        uc.mem_write(stack_low, bytes([STACK_PAINT]) * (stack_top - stack_low))
        uc.mem_write(arena + input_offset, np.asarray(x, np.int8).tobytes())
        halt = self.symbols["kws_halt"][0] & ~1
        uc.reg_write(arm.UC_ARM_REG_SP, stack_top)
        uc.reg_write(arm.UC_ARM_REG_LR, halt | 1)
        self._hits.clear()
        self._flash_reads = 0
        self._taken = 0
        self._next = self.symbols["kws_invoke"][0] & ~1
        start = time.perf_counter()
        uc.emu_start(self.symbols["kws_invoke"][0] | 1, halt, timeout=0, count=0)
        seconds = time.perf_counter() - start
        hits = self._hits
        instructions = cycles = 0
        mnemonics: dict[str, int] = {}
        for key, n in hits.items():
            count, cyc, mn = self._cost(key)
            instructions += n * count
            cycles += n * cyc
            for m, c in mn.items():
                mnemonics[m] = mnemonics.get(m, 0) + n * c
        # The return to kws_halt is a taken branch too (the last block's BX LR / POP {pc}).
        taken = self._taken + 1
        cycles += taken * BRANCH_REFILL + self._flash_reads * FLASH_WAIT_STATES
        painted = bytes(uc.mem_read(stack_low, stack_top - stack_low))
        # The stack grows down: bytes below the deepest write still hold the paint.
        stack_bytes = len(painted.lstrip(bytes([STACK_PAINT])))
        out = np.frombuffer(bytes(uc.mem_read(arena + output_offset, output_size)), np.int8)
        per_function: dict[str, int] = {}
        for key, n in hits.items():
            name = self._function_at(key[0])
            per_function[name] = per_function.get(name, 0) + n * self._blocks[key][0]
        return EmulationResult(
            output=out.copy(),
            instructions=instructions,
            cycles=cycles,
            blocks=sum(hits.values()),
            taken_branches=taken,
            flash_reads=self._flash_reads,
            stack_bytes=stack_bytes,
            host_seconds=seconds,
            mnemonics=mnemonics,
            per_function=per_function,
        )

    def _function_at(self, address: int) -> str:
        for name, (start, size) in self._functions:
            if start <= address < start + size:
                return name
        return "?"
