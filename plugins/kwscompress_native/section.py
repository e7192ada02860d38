"""The report's "MCU (no board)" section: what the ``mcu`` records of the variant rows hold.

Per measured variant: flash and RAM read from the cross-compiled ELF beside the estimates and the
TFLite figures, instructions per MAC and the cycle model's milliseconds beside the board's
measured latency where ``kwscompress board-profile`` stored one, and whether the generated code
gave TFLM's outputs on every test clip.
"""

from __future__ import annotations

from typing import Any

from kwscompress.protocols import SectionContent
from kwscompress.report import blocks
from kwscompress.report.blocks import MISSING, Cell, fmt_bytes, fmt_int, fmt_ms, fmt_percent
from kwscompress.run import Run


class McuSection:
    """Measured flash/RAM and emulated Cortex-M4 latency of every exported int8 variant."""

    name = "mcu"
    description = "flash/RAM from the cross-compiled ELF and emulated Cortex-M4 latency"
    title = "MCU (no board)"
    order = 95

    def render(self, run: Run) -> SectionContent | None:
        """None until the mcu stage has measured a variant."""
        rows = [
            r
            for r in run.results.get("variants") or []
            if isinstance(r, dict) and isinstance(r.get("mcu"), dict)
        ]
        if not rows:
            return None
        board = (run.results.get("estimate") or {}).get("board") or {}
        flash_capacity = board.get("usable_flash_bytes") or board.get("flash_bytes")
        ram_capacity = board.get("ram_bytes")
        measured = [r for r in rows if r["mcu"].get("status") == "ok"]
        parts = [
            blocks.paragraph(
                "Each exported int8 model is turned into generated C kernels, cross-compiled for "
                "a Cortex-M4F and run in an emulated core on test clips. Flash and RAM are read "
                "from the ELF (flash = .text + .rodata + .data, RAM = .data + .bss + stack); "
                "instructions are counted by the emulator; cycles and milliseconds come from a "
                "cycle model of the Cortex-M4 (see the docs), not from a board. Where a board "
                "profile was stored, its measured latency stands beside the model's."
            )
        ]
        if measured:
            parts.append(self._table(measured, flash_capacity, ram_capacity))
        failed = [r for r in rows if r["mcu"].get("status") != "ok"]
        for row in failed:
            error = row["mcu"].get("error") or {}
            parts.append(
                blocks.note(
                    f"{row['id']}: {error.get('component', 'mcu runtime')} from plugin "
                    f"{error.get('plugin', '?')} failed: {error.get('message', '')}",
                    "error",
                )
            )
        return blocks.combine(*parts)

    @staticmethod
    def _table(
        rows: list[dict[str, Any]], flash_capacity: int | None, ram_capacity: int | None
    ) -> SectionContent:
        def share(value: Any, capacity: int | None) -> str:
            return fmt_percent(value / capacity, 2) if value and capacity else ""

        body = []
        for row in rows:
            mcu = row["mcu"]
            deploy = row.get("deploy") or {}
            board_ms = deploy.get("board_latency_ms")
            emulated_ms = mcu.get("ms_at_clock")
            ratio = (
                f"board / model {board_ms / emulated_ms:.2f}" if board_ms and emulated_ms else ""
            )
            exact = mcu.get("bit_exact")
            body.append(
                [
                    Cell(row["id"]),
                    Cell(
                        fmt_bytes(mcu.get("flash_bytes")),
                        share(mcu.get("flash_bytes"), flash_capacity),
                    ),
                    Cell(
                        fmt_bytes(mcu.get("ram_bytes")),
                        share(mcu.get("ram_bytes"), ram_capacity),
                    ),
                    f"{fmt_int(mcu.get('text_bytes'))} / {fmt_int(mcu.get('rodata_bytes'))} / "
                    f"{fmt_int(mcu.get('data_bytes'))} / {fmt_int(mcu.get('bss_bytes'))}",
                    Cell(
                        fmt_int(row.get("weight_bytes")),
                        f"TFLite {fmt_int(deploy.get('tflite_bytes'))} B",
                    ),
                    Cell(
                        fmt_int(mcu.get("activation_buffer_bytes")),
                        f"TFLM arena {fmt_int(deploy.get('arena_bytes'))} B",
                    ),
                    fmt_int(mcu.get("instructions")),
                    f"{mcu['instructions_per_mac']:.2f}"
                    if mcu.get("instructions_per_mac")
                    else MISSING,
                    Cell(fmt_ms(emulated_ms), f"{fmt_int(mcu.get('cycles'))} cycles"),
                    Cell(fmt_ms(board_ms) if board_ms else "not measured", ratio),
                    Cell(
                        fmt_percent(exact) if exact is not None else MISSING,
                        kind="good" if exact == 1.0 else "bad",
                    ),
                ]
            )
        clock = rows[0]["mcu"].get("clock_hz") or 0
        return blocks.table(
            [
                "variant",
                "flash (ELF)",
                "RAM (ELF)",
                ".text / .rodata / .data / .bss",
                "weight bytes (estimate)",
                "activation buffer",
                "instructions",
                "per MAC",
                f"ms at {clock / 1e6:g} MHz (model)",
                "ms on the board",
                "bit-exact with TFLM",
            ],
            body,
            caption="Measured without a board: sizes from the ELF, instructions from the "
            "emulated core, milliseconds from the cycle model.",
        )
