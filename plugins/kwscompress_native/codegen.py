"""Generate plain C99 inference code for an int8 ``.tflite`` graph.

Layers and how they are lowered (see docs/mcu.rst for the reasoning):

* ``CONV_2D`` and ``DEPTHWISE_CONV_2D`` with one input channel (TFLite's form of tiny_conv's
  first layer): the input is copied once into a zero-padded int16 image of ``x - zero_point``,
  then a fully unrolled direct convolution computes two output pixels by up to four channels at
  a time with ``SMLAD`` (two 16-bit MACs per instruction). Shapes, strides and offsets are
  constants; weights are re-laid-out so each 32-bit word unpacks (``SXTB16``) straight into the
  pairs the input words hold.
* ``FULLY_CONNECTED``: int8 inputs are unpacked four at a time with ``SXTB16``; the input zero
  point is folded into the bias at generation time (``sum((x - zp) w) = sum(x w) - zp sum(w)``,
  exact in int32 wrap-around), so the inner loop is loads, unpacks and ``SMLAD`` only.
* ``DEPTHWISE_CONV_2D`` with several input channels, pools, ``PAD``, ``SOFTMAX``: direct loops.
* ``RESHAPE``: no code; the output aliases the input buffer.

Sub-8-bit variants (``weight_bits`` 2..4) store weights two per byte; the SIMD kernels unpack
them with a mask and ``SXTB16`` (weights scaled by 16, accumulator shifted back once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kwscompress.errors import KwsError
from kwscompress_native import packing, quantmath
from kwscompress_native.planner import Buffer, plan
from kwscompress_native.tflite_model import Model, Operator, Tensor

SUPPORTED_OPS = (
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "AVERAGE_POOL_2D",
    "MAX_POOL_2D",
    "MEAN",
    "RESHAPE",
    "PAD",
    "SOFTMAX",
)
# One channel by several neighbouring pixels per unrolled block: neighbouring pixels share
# input words and each weight pair loaded feeds every pixel, while the accumulators, the live
# input words and the weight fit the 13 usable registers without spills. Chosen by measuring
# micro_speech in the emulator (docs/mcu.rst lists the alternatives tried).
CONV_CHANNELS_PER_BLOCK = 1
CONV_PIXEL_CHOICES = (5, 4)
UNROLL_CHANNEL_BLOCKS_MAX = 8
FC_CHANNELS_PER_BLOCK = 4
FC_UNROLL = 4
WIDEN_MIN_PIXELS = 64
WIDEN_MAX_WEIGHTS = 1024


@dataclass
class LayerInfo:
    """What the generator knows about one op (for reports and MAC counts)."""

    index: int
    op: str
    kernel: str
    macs: int
    weight_bytes: int
    output_shape: tuple[int, ...]


@dataclass
class GeneratedModel:
    """The generated C source and the facts a build and a run need."""

    source: str
    arena_bytes: int
    input_offset: int
    input_shape: tuple[int, ...]
    output_offset: int
    output_shape: tuple[int, ...]
    weight_bits: int
    weight_bytes: int
    """Bytes of weight arrays as stored (packed for sub-8-bit)."""
    constant_bytes: int
    """Bytes of every constant array (weights, biases, multipliers, shifts)."""
    weight_symbols: list[str]
    macs: int
    layers: list[LayerInfo] = field(default_factory=list)


class _Emitter:
    """Collects constant arrays, layer functions and calls while walking the graph."""

    def __init__(self, model: Model, weight_bits: int):
        self.model = model
        self.weight_bits = weight_bits
        self.bits = packing.storage_bits(weight_bits)
        self.consts: list[str] = []
        self.functions: list[str] = []
        self.calls: list[str] = []
        self.buffers: dict[str, Buffer] = {}
        self.tensor_buffer: dict[int, str] = {}
        self.slack: dict[str, int] = {}
        self.layers: list[LayerInfo] = []
        self.weight_symbols: list[str] = []
        self.weight_bytes = 0
        self.constant_bytes = 0
        self.fused_pads: dict[int, tuple[int, int, int, int]] = {}

    # ---- constants -------------------------------------------------------------------------
    def const_array(self, name: str, ctype: str, values: np.ndarray, weight: bool = False) -> str:
        values = np.asarray(values).reshape(-1)
        if len(values) == 0:
            values = np.zeros(1, np.int64)
        width = {"uint8_t": 1, "int8_t": 1, "int32_t": 4}[ctype]
        body = ",".join(str(int(v)) for v in values)
        symbol = f"kws_{name}"
        # Non-static const: a named object in .rodata that tests and size reports can find.
        self.consts.append(
            f"const {ctype} {symbol}[{len(values)}] __attribute__((aligned(4))) = {{{body}}};"
        )
        size = len(values) * width
        self.constant_bytes += size
        if weight:
            self.weight_symbols.append(symbol)
            self.weight_bytes += size
        return symbol

    # ---- buffers ---------------------------------------------------------------------------
    def tensor_buf(self, tensor: int, op_index: int, slack: int = 0) -> str:
        """The buffer of ``tensor`` (created if new), marked live at ``op_index``."""
        name = self.tensor_buffer.get(tensor)
        if name is None:
            t = self.model.tensors[tensor]
            name = f"t{tensor}"
            self.tensor_buffer[tensor] = name
            self.buffers[name] = Buffer(name, t.size, op_index, op_index)
        buf = self.buffers[name]
        buf.first, buf.last = min(buf.first, op_index), max(buf.last, op_index)
        self.slack[name] = max(self.slack.get(name, 0), slack)
        return f"(kws_arena + @{name}@)"

    def scratch(self, name: str, size: int, op_index: int) -> str:
        self.buffers[name] = Buffer(name, size, op_index, op_index)
        return f"(kws_arena + @{name}@)"

    # ---- layers ----------------------------------------------------------------------------
    def layer(
        self, i: int, op: Operator, function: str, kernel: str, macs: int = 0, weights: int = 0
    ) -> None:
        """Add op ``i``'s C function ``kws_layer{i}``, its call, and its :class:`LayerInfo`."""
        self.functions.append(function)
        self.calls.append(f"kws_layer{i}();")
        shape = self.model.tensors[op.outputs[0]].shape
        self.layers.append(LayerInfo(i, op.op, kernel, macs, weights, shape))


def generate(model: Model, weight_bits: int = 8) -> GeneratedModel:
    """C source for ``model``; unsupported ops or weights wider than ``weight_bits`` raise."""
    if not 2 <= weight_bits <= 8:
        raise KwsError(f"weight_bits={weight_bits} is not supported; use 2..8")
    for op in model.operators:
        if op.op not in SUPPORTED_OPS:
            raise KwsError(
                f"op {op.op} is not supported by the native code generator; "
                f"supported: {', '.join(SUPPORTED_OPS)}"
            )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise KwsError("the native code generator needs a model with one input and one output")
    em = _Emitter(model, weight_bits)
    n_ops = len(model.operators)
    in_t, out_t = model.inputs[0], model.outputs[0]
    for t in (in_t, out_t):
        if model.tensors[t].dtype is not np.int8:
            raise KwsError(
                f"tensor {model.tensors[t].name!r} is not int8; export a full-int8 model"
            )
    em.tensor_buf(in_t, -1)
    em.fused_pads = _fusable_pads(model)
    fused_pad_ops = {j for j, _, _, _ in em.fused_pads.values()}
    for i, op in enumerate(model.operators):
        if i in fused_pad_ops:
            shape = model.tensors[op.outputs[0]].shape
            em.layers.append(LayerInfo(i, op.op, "fused into the next layer", 0, 0, shape))
            continue
        _LOWER[op.op](em, i, op)
    em.tensor_buf(out_t, n_ops)
    for name, buf in em.buffers.items():
        buf.size += em.slack.get(name, 0)
    arena = plan(list(em.buffers.values()))
    offsets = {name: buf.offset for name, buf in em.buffers.items()}
    body = "\n".join(em.consts + em.functions)
    for name, offset in offsets.items():
        body = body.replace(f"@{name}@", str(offset))
    source = _render(body, em.calls, arena)
    tin, tout = model.tensors[in_t], model.tensors[out_t]
    return GeneratedModel(
        source=source,
        arena_bytes=arena,
        input_offset=offsets[em.tensor_buffer[in_t]],
        input_shape=tin.shape,
        output_offset=offsets[em.tensor_buffer[out_t]],
        output_shape=tout.shape,
        weight_bits=weight_bits,
        weight_bytes=em.weight_bytes,
        constant_bytes=em.constant_bytes,
        weight_symbols=em.weight_symbols,
        macs=sum(layer.macs for layer in em.layers),
        layers=em.layers,
    )


def _render(body: str, calls: list[str], arena: int) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("kwscompress_native", "templates"),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template("model.c.j2").render(body=body, calls=calls, arena_bytes=max(arena, 8))


def _fusable_pads(model: Model) -> dict[int, tuple[int, int, int, int]]:
    """PADs that the next convolution can absorb: conv index -> (pad op, source, top, left).

    The convolution kernels copy their input into a zero-padded int16 image of
    ``x - zero_point`` anyway; a PAD on height and width with the zero point as its value, read
    only by a CONV_2D (or a one-channel DEPTHWISE_CONV_2D), just widens that image's border.
    """
    fused = {}
    readers: dict[int, list[int]] = {}
    for k, op in enumerate(model.operators):
        for t in op.inputs:
            readers.setdefault(t, []).append(k)
    for j, op in enumerate(model.operators):
        if op.op != "PAD" or model.tensors[op.inputs[1]].data is None:
            continue
        out = op.outputs[0]
        pads = np.asarray(model.tensors[op.inputs[1]].data, np.int64).reshape(-1, 2)
        zp = int(model.tensors[out].zero_point[0]) if model.tensors[out].zero_point.size else 0
        value = zp
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            data = model.tensors[op.inputs[2]].data
            value = None if data is None else int(np.asarray(data).reshape(-1)[0])
        users = readers.get(out, [])
        if (
            value != zp
            or pads.shape != (4, 2)
            or pads[0].any()
            or pads[3].any()
            or out in model.outputs
            or len(users) != 1
        ):
            continue
        conv = model.operators[users[0]]
        one_channel = model.tensors[out].shape[-1] == 1
        if conv.inputs[0] == out and (
            conv.op == "CONV_2D" or (conv.op == "DEPTHWISE_CONV_2D" and one_channel)
        ):
            fused[users[0]] = (j, op.inputs[0], int(pads[1, 0]), int(pads[2, 0]))
    return fused


# ---- helpers --------------------------------------------------------------------------------
def _q(t: Tensor) -> tuple[np.float32, int]:
    if t.scale.size == 0:
        raise KwsError(f"tensor {t.name!r} is not quantized; export a full-int8 model")
    return np.float32(t.scale[0]), int(t.zero_point[0]) if t.zero_point.size else 0


def _const(em: _Emitter, index: int) -> Tensor:
    t = em.model.tensors[index]
    if t.data is None:
        raise KwsError(f"tensor {t.name!r} must be a constant for the native code generator")
    return t


def _check_weights(em: _Emitter, t: Tensor, values: np.ndarray) -> None:
    lo, hi = -(1 << (em.weight_bits - 1)), (1 << (em.weight_bits - 1)) - 1
    if values.size and (values.min() < lo or values.max() > hi):
        raise KwsError(
            f"weights of {t.name!r} span [{int(values.min())}, {int(values.max())}], which does "
            f"not fit weight_bits={em.weight_bits} ([{lo}, {hi}]); quantize to that width first"
        )


def _padding(kind: int, size: int, out: int, stride: int, kernel: int, dilation: int = 1) -> int:
    """TFLite's ComputePaddingHeightWidth: padding before the first pixel (SAME) or 0."""
    effective = (kernel - 1) * dilation + 1
    if kind == 1:  # VALID
        return 0
    return max((out - 1) * stride + effective - size, 0) // 2


def _bias(em: _Emitter, op: Operator, channels: int) -> np.ndarray:
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        return np.asarray(_const(em, op.inputs[2]).data, np.int64).reshape(-1)
    return np.zeros(channels, np.int64)


def _requant_params(
    em: _Emitter, i: int, x: Tensor, f: Tensor, y: Tensor, channels: int, per_tensor_fc: bool
) -> tuple[str, str | None, str]:
    """Const arrays of multipliers and shifts; the fast form when every shift allows it.

    Returns (multiplier array, rounding array or None, shift array): with a rounding array the
    shifts are right shifts in 1..23 for ``kws_requant_r``, else TFLite's signed shifts.
    """
    xs, _ = _q(x)
    ys, _ = _q(y)
    if per_tensor_fc and f.scale.size == 1:
        m, s = quantmath.fc_multiplier(xs, np.float32(f.scale[0]), ys)
        mults, shifts = [m] * channels, [s] * channels
    else:
        mults, shifts = quantmath.conv_multipliers(xs, f.scale, ys, channels)
    msym = em.const_array(f"l{i}_mult", "int32_t", np.array(mults))
    if all(-23 <= s <= -1 for s in shifts):
        rounds = [1 << (-s - 1) for s in shifts]
        return (
            msym,
            em.const_array(f"l{i}_round", "int32_t", np.array(rounds)),
            em.const_array(f"l{i}_shift", "int32_t", -np.array(shifts)),
        )
    return msym, None, em.const_array(f"l{i}_shift", "int32_t", np.array(shifts))


def _requant_c(acc: str, c: str, params: tuple[str, str | None, str], y: Tensor, fused: int) -> str:
    ys, yzp = _q(y)
    lo, hi = quantmath.activation_range(fused, ys, yzp)
    mult, rnd, shift = params
    if rnd is not None:
        return f"kws_requant_r({acc}, {mult}[{c}], {rnd}[{c}], {shift}[{c}], {yzp}, {lo}, {hi})"
    return f"kws_requant({acc}, {mult}[{c}], (int){shift}[{c}], {yzp}, {lo}, {hi})"


# ---- convolution (SIMD direct kernel) -------------------------------------------------------
def _lower_conv(em: _Emitter, i: int, op: Operator) -> None:
    x = em.model.tensors[op.inputs[0]]
    f = _const(em, op.inputs[1])
    y = em.model.tensors[op.outputs[0]]
    o = op.options
    _, h, w, ic = x.shape
    _, oh, ow, oc = y.shape
    if o.get("dilationHFactor", 1) != 1 or o.get("dilationWFactor", 1) != 1:
        raise KwsError(f"op {op.op} with dilation is not supported by the native code generator")
    if op.op == "DEPTHWISE_CONV_2D":
        if ic != 1:
            _lower_depthwise(em, i, op)
            return
        kh, kw = f.shape[1:3]
        wmat = np.transpose(np.asarray(f.data, np.int64)[0], (2, 0, 1))  # [oc, kh, kw]
    else:
        _, kh, kw, _ = f.shape
        wmat = np.asarray(f.data, np.int64).reshape(oc, kh, kw * ic)
    _check_weights(em, f, wmat)
    sh, sw = o["strideH"], o["strideW"]
    top = _padding(o["padding"], h, oh, sh, kh)
    left = _padding(o["padding"], w, ow, sw, kw)
    source = op.inputs[0]
    if i in em.fused_pads:  # read the PAD's input and pad by its amounts as well
        _, source, pad_top, pad_left = em.fused_pads[i]
        top, left = top + pad_top, left + pad_left
        h, w = em.model.tensors[source].shape[1:3]
    ph = max(h + top, (oh - 1) * sh + kh)
    pw = max(w + left, (ow - 1) * sw + kw)
    _, xzp = _q(x)
    # 8-bit weights reused for many pixels are stored pre-widened to int16 pairs when the layer
    # is small: one load per pair instead of a load and two unpacks (see docs/mcu.rst).
    bits = em.bits
    if bits == 8 and oh * ow >= WIDEN_MIN_PIXELS and wmat.size <= WIDEN_MAX_WEIGHTS:
        bits = 16
    unit = 2 * packing.PAIRS_PER_WORD[bits]  # taps per weight word
    taps = kw * ic
    taps_padded = -(-taps // unit) * unit
    row_elems = pw * ic
    slack = (taps_padded - taps) * 2 + 8
    src = em.tensor_buf(source, i)
    dst = em.tensor_buf(op.outputs[0], i)
    # When no image row serves two output rows (1x1 convolutions), only the rows of the current
    # output row are widened, into a small band, instead of the whole image.
    band = kh <= sh
    # Neighbouring output pixels of a block share each weight word loaded. They lie along the
    # row; when a row is one pixel wide (tc_ds_cnn: a first layer spanning every bin, and the
    # 1-D layers after it) they lie down the column instead: the next pixel is the next row.
    along_rows = ow == 1 and oh > 1
    count = oh if along_rows else ow
    npx = next((p for p in CONV_PIXEL_CHOICES if count % p == 0), CONV_PIXEL_CHOICES[-1])
    npx = min(npx, count)
    # A band holds the kh rows of each output row of a block, one output row after another.
    rows_kept = (kh * (npx if along_rows else 1)) if band else ph
    pad = em.scratch(f"s{i}", rows_kept * row_elems * 2 + slack, i)

    # Weight words in the order the unrolled code consumes them: block, kh, word, channel.
    wpad = np.zeros((oc, kh, taps_padded), np.int64)
    wpad[:, :, :taps] = wmat
    blocks = _blocks(oc, CONV_CHANNELS_PER_BLOCK)
    words = []
    for c0, g in blocks:
        for r in range(kh):
            for q in range(taps_padded // unit):
                for c in range(c0, c0 + g):
                    words.append(wpad[c, r, q * unit : (q + 1) * unit])
    wsym = em.const_array(
        f"l{i}_w", "uint8_t", packing.pack_words(np.array(words), bits), weight=True
    )
    bias = em.const_array(f"l{i}_bias", "int32_t", _bias(em, op, oc))
    params = _requant_params(em, i, x, f, y, oc, per_tensor_fc=False)
    fused = o.get("fusedActivationFunction", 0)

    # Bytes from one pixel of a block to the next: a column step (in the band or the image) or
    # a row step.
    pixel_bytes = (kh if band else sh) * row_elems * 2 if along_rows else sw * ic * 2
    variants = []
    for pixels in sorted({npx, 1}, reverse=True):

        def block(c: str, g: int, pixels: int = pixels) -> tuple[list[str], int]:
            return _conv_block(
                c,
                g,
                pixels,
                pixel_bytes,
                kh,
                taps_padded,
                unit,
                row_elems,
                oc,
                bits,
                lambda acc, ch: _requant_c(acc, ch, params, y, fused),
                bias,
            )

        variants.append(_px_function(f"kws_l{i}_px{pixels}", oc, CONV_CHANNELS_PER_BLOCK, block))
    em.functions.extend(variants)
    if band:
        em.functions.append(_row_fill_fn(f"kws_l{i}_fill", src, h, w, ic, top, left, pw, xzp))
        fill = (
            f"  for (int j = 0; j < {slack // 2}; ++j)\n"
            f"    ((int16_t *){pad})[{rows_kept * row_elems} + j] = 0;\n"
        )
        row_start = (
            f"    for (int r = 0; r < {kh}; ++r)\n"
            f"      kws_l{i}_fill((int16_t *){pad} + r * {row_elems}, oy * {sh} + r);\n"
            f"    const uint8_t *row = img;\n"
        )
    else:
        fill = _pad_fill_c(src, pad, h, w, ic, top, left, ph, pw, xzp, slack)
        row_start = f"    const uint8_t *row = img + oy * {sh * row_elems * 2};\n"
    if along_rows and band:  # widen each block's rows into the band, then one call
        fill_rows = (
            f"    for (int p = 0; p < {{n}}; ++p)\n"
            f"      for (int r = 0; r < {kh}; ++r)\n"
            f"        kws_l{i}_fill((int16_t *){pad} + (p * {kh} + r) * {row_elems}, "
            f"(oy + p) * {sh} + r);\n"
        )
        loop = "  int oy = 0;\n" + _blocks_then_rest(
            "oy",
            oh,
            npx,
            lambda n: (
                f" {{\n{fill_rows.format(n=n)}"
                f"    kws_l{i}_px{n}(img, dst + oy * {oc}, {wsym});\n  }}\n"
            ),
        )
    elif along_rows:  # blocks of output rows; each output row is one pixel of oc channels
        loop = "  int oy = 0;\n" + _blocks_then_rest(
            "oy",
            oh,
            npx,
            lambda n: f"\n    kws_l{i}_px{n}(img + oy * {pixel_bytes}, dst + oy * {oc}, {wsym});\n",
        )
    else:
        loop = (
            f"  for (int oy = 0; oy < {oh}; ++oy) {{\n"
            f"{row_start}"
            f"    int8_t *orow = dst + oy * {ow * oc};\n"
            f"    int ox = 0;\n"
            + _blocks_then_rest(
                "ox",
                ow,
                npx,
                lambda n: (
                    f"\n      kws_l{i}_px{n}(row + ox * {pixel_bytes}, orow + ox * {oc}, {wsym});\n"
                ),
                indent="    ",
            )
            + "  }\n"
        )
    macs = oh * ow * oc * kh * kw * ic
    em.layer(
        i,
        op,
        f"KWS_LAYER void kws_layer{i}(void) {{ /* {op.op} {kh}x{kw} s{sh}x{sw} -> {y.shape} */\n"
        f"{fill}"
        f"  const uint8_t *img = (const uint8_t *){pad};\n"
        f"  int8_t *dst = (int8_t *){dst};\n"
        f"{loop}}}",
        "simd-direct",
        macs,
        len(words) * 4,
    )


def _blocks_then_rest(
    var: str, total: int, per_block: int, call: Callable[[int], str], indent: str = "  "
) -> str:
    """C loops taking ``var`` (already 0) to ``total``: blocks of ``per_block`` through
    ``call(per_block)``, then single steps through ``call(1)``. A loop that would never run is
    left out (gcc warns about those)."""
    loops = ""
    if total >= per_block:
        step = f"{var} + {per_block - 1} < {total}; {var} += {per_block}"
        loops += f"{indent}for (; {step}){call(per_block)}"
    if total % per_block:
        loops += f"{indent}for (; {var} < {total}; ++{var}){call(1)}"
    return loops


def _blocks(channels: int, per_block: int) -> list[tuple[int, int]]:
    return [(c, min(per_block, channels - c)) for c in range(0, channels, per_block)]


def _conv_block(
    c: str,
    g: int,
    pixels: int,
    pixel_bytes: int,
    kh: int,
    taps_padded: int,
    unit: int,
    row_elems: int,
    oc: int,
    bits: int,
    requant: Any,
    bias: str,
) -> tuple[list[str], int]:
    """Unrolled code for ``g`` channels from C index ``c`` by ``pixels`` pixels; weight words."""
    lines = []
    accs = [[f"a{cg}_{p}" for p in range(pixels)] for cg in range(g)]
    lines.append("int32_t " + ", ".join(f"{a} = 0" for row in accs for a in row) + ";")
    pairs = unit // 2
    word = 0
    for r in range(kh):
        for q in range(taps_padded // unit):
            lines.append("{")
            for p in range(pixels):
                for j in range(pairs):
                    off = p * pixel_bytes + (r * row_elems + q * unit + 2 * j) * 2
                    lines.append(f"  uint32_t x{p}_{j} = kws_ld32(pa + {off});")
            for cg in range(g):
                wname = f"w{cg}"
                lines.append(f"  uint32_t {wname} = kws_ld32(wp + {word * 4});")
                unpack, names = packing.unpack_pairs_c(wname, bits)
                lines.extend("  " + s for s in unpack)
                word += 1
                for p in range(pixels):
                    for j in range(pairs):
                        a = accs[cg][p]
                        lines.append(f"  {a} = KWS_SMLAD(x{p}_{j}, {names[j]}, {a});")
            lines.append("}")
    for cg in range(g):
        ch = f"{c} + {cg}" if cg else c
        for p in range(pixels):
            acc = accs[cg][p] if bits != 4 else f"({accs[cg][p]} >> 4)"
            out = f"out[{p * oc} + {ch}]" if p else f"out[{ch}]"
            lines.append(f"{out} = {requant(f'{acc} + {bias}[{ch}]', ch)};")
    return lines, word


def _px_function(name: str, oc: int, g: int, block: Any, indent: str = "    ") -> str:
    """A pixel-block function over every channel block, then the remainder block.

    Few blocks are unrolled (constant channel indices let the compiler keep the requantization
    parameters as immediates); many are a C loop, which keeps the code small.
    """
    full = oc - oc % g
    text = [
        # External linkage and the weights as an argument keep the compiler from folding the
        # weights into immediates (they stay one copy in .rodata, read per use).
        f"__attribute__((noinline)) void {name}(const uint8_t *pa, int8_t *out, "
        "const uint8_t *wp) {"
    ]
    if full // g <= UNROLL_CHANNEL_BLOCKS_MAX:
        for c in range(0, full, g):
            body, words = block(str(c), g)
            text += ["  {", *(indent + line for line in body), f"    wp += {words * 4};", "  }"]
    else:
        body, words = block("c", g)
        text += [
            f"  for (int c = 0; c < {full}; c += {g}, wp += {words * 4}) {{",
            *(indent + line for line in body),
            "  }",
        ]
    if oc % g:
        rest, _ = block(str(full), oc % g)
        text += ["  {", *(indent + line for line in rest), "  }"]
    return "\n".join([*text, "}"])


def _zeros(start: int, end: int, indent: str) -> str:
    """A C loop zeroing ``p[start:end]``, or nothing for an empty range (gcc warns about loops
    that never run)."""
    return f"{indent}for (int j = {start}; j < {end}; ++j) p[j] = 0;\n" if end > start else ""


def _pad_fill_c(
    src: str,
    pad: str,
    h: int,
    w: int,
    c: int,
    top: int,
    left: int,
    ph: int,
    pw: int,
    zp: int,
    slack: int,
) -> str:
    row = pw * c
    return (
        f"  {{ /* zero-padded int16 image of (x - zero_point) */\n"
        f"    int16_t *p = (int16_t *){pad};\n"
        f"    const int8_t *s = (const int8_t *){src};\n"
        f"    for (int r = 0; r < {ph}; ++r, p += {row}) {{\n"
        f"      int iy = r - {top};\n"
        f"      if (iy < 0 || iy >= {h}) {{\n"
        f"        for (int j = 0; j < {row}; ++j) p[j] = 0;\n"
        f"        continue;\n"
        f"      }}\n"
        + _zeros(0, left * c, "      ")
        + f"      const int8_t *sr = s + iy * {w * c};\n"
        f"      for (int j = 0; j < {w * c}; ++j) p[{left * c} + j] = (int16_t)(sr[j] - ({zp}));\n"
        + _zeros((left + w) * c, row, "      ")
        + "    }\n"
        + _zeros(0, slack // 2, "    ")
        + "  }\n"
    )


def _row_fill_fn(
    name: str, src: str, h: int, w: int, c: int, top: int, left: int, pw: int, zp: int
) -> str:
    """A C function writing padded row ``r`` of the int16 image of ``x - zero_point``."""
    row = pw * c
    return (
        # KWS_ROW_FILL (kws_kernels.h) says where it is inlined and why.
        f"KWS_ROW_FILL void {name}(int16_t *p, int r) {{\n"
        f"  const int8_t *s = (const int8_t *){src};\n"
        f"  int iy = r - {top};\n"
        f"  if (iy < 0 || iy >= {h}) {{\n"
        f"    for (int j = 0; j < {row}; ++j) p[j] = 0;\n"
        f"    return;\n"
        f"  }}\n" + _zeros(0, left * c, "  ") + f"  const int8_t *sr = s + iy * {w * c};\n"
        f"  for (int j = 0; j < {w * c}; ++j) p[{left * c} + j] = (int16_t)(sr[j] - ({zp}));\n"
        + _zeros((left + w) * c, row, "  ")
        + "}"
    )


# ---- fully connected --------------------------------------------------------------------------
def _lower_fc(em: _Emitter, i: int, op: Operator) -> None:
    x = em.model.tensors[op.inputs[0]]
    f = _const(em, op.inputs[1])
    k = f.shape[1]
    wmat = np.asarray(f.data, np.int64)
    _check_weights(em, f, wmat)
    if f.zero_point.size and np.any(f.zero_point != 0):
        raise KwsError(f"weights of {f.name!r} have a non-zero zero point; TFLite int8 needs 0")
    _emit_matmul(em, i, op, wmat, x.size // k)


def _emit_matmul(
    em: _Emitter,
    i: int,
    op: Operator,
    wmat: np.ndarray,
    rows: int,
) -> None:
    """``rows`` int8 input rows (a batch) times ``wmat`` [out, k]: the fully connected layer."""
    x = em.model.tensors[op.inputs[0]]
    f = em.model.tensors[op.inputs[1]]
    y = em.model.tensors[op.outputs[0]]
    oc, k = wmat.shape
    _, xzp = _q(x)
    bits = em.bits
    unit = 2 * packing.PAIRS_PER_WORD[bits]  # inputs per weight word
    step = unit * FC_UNROLL
    kp = -(-k // step) * step
    wpad = np.zeros((oc, kp), np.int64)
    wpad[:, :k] = wmat
    blocks = _blocks(oc, FC_CHANNELS_PER_BLOCK)
    # Consumption order within a word: (x0,x2), (x1,x3)[, (x4,x6), (x5,x7)].
    order = [0, 2, 1, 3] if bits == 8 else [0, 2, 1, 3, 4, 6, 5, 7]
    words = []
    for c0, g in blocks:
        for kk in range(0, kp, unit):
            for c in range(c0, c0 + g):
                words.append(wpad[c, kk + np.array(order)])
    wsym = em.const_array(
        f"l{i}_w", "uint8_t", packing.pack_words(np.array(words), bits), weight=True
    )
    bias = _bias(em, op, oc) - xzp * wmat.sum(axis=1)
    bsym = em.const_array(
        f"l{i}_bias", "int32_t", np.array([quantmath.wrap_int32(int(b)) for b in bias])
    )
    params = _requant_params(em, i, x, f, y, oc, per_tensor_fc=True)
    fused = op.options.get("fusedActivationFunction", 0)
    src = em.tensor_buf(op.inputs[0], i, slack=kp - k)
    dst = em.tensor_buf(op.outputs[0], i)
    g = FC_CHANNELS_PER_BLOCK
    full = oc - oc % g
    body = []
    if full // g <= 2:
        for c0, gb in blocks:
            body.append(_fc_block(str(c0), gb, kp, unit, bits, bsym, params, y, fused))
    else:  # many channel blocks: one copy of the code in a C loop
        body.append(f"    for (int c = 0; c < {full}; c += {g}) {{")
        body.append(_fc_block("c", g, kp, unit, bits, bsym, params, y, fused))
        body.append("    }")
        if oc % g:
            body.append(_fc_block(str(full), oc % g, kp, unit, bits, bsym, params, y, fused))
    em.layer(
        i,
        op,
        f"KWS_LAYER void kws_layer{i}(void) {{ /* {op.op} {k} -> {oc}, {rows} rows */\n"
        f"  const uint8_t *wp = {wsym};\n"
        f"  for (int b = 0; b < {rows}; ++b) {{\n"
        f"    const int8_t *xb = (const int8_t *){src} + b * {k};\n"
        f"    int8_t *out = (int8_t *){dst} + b * {oc};\n"
        f"    wp = {wsym};\n" + "\n".join(body) + "\n  }\n}",
        "simd-fc",
        rows * oc * k,
        len(words) * 4,
    )


def _fc_block(
    c0: str,
    g: int,
    kp: int,
    unit: int,
    bits: int,
    bsym: str,
    params: tuple[str, str | None, str],
    y: Tensor,
    fused: int,
) -> str:
    lines = ["    {", "      " + "int32_t " + ", ".join(f"a{c} = 0" for c in range(g)) + ";"]
    lines.append(f"      for (int k = 0; k < {kp}; k += {unit * FC_UNROLL}) {{")
    for u in range(FC_UNROLL):
        xs = []
        for h in range(unit // 4):
            lines.append(f"        uint32_t x{u}_{h} = kws_ld32(xb + k + {u * unit + 4 * h});")
            lines.append(f"        uint32_t x{u}_{h}e = KWS_SXTB16(x{u}_{h});")
            lines.append(f"        uint32_t x{u}_{h}o = KWS_SXTB16_ROR8(x{u}_{h});")
            xs += [f"x{u}_{h}e", f"x{u}_{h}o"]
        for c in range(g):
            wname = f"w{u}_{c}"
            lines.append(f"        uint32_t {wname} = kws_ld32(wp); wp += 4;")
            unpack, names = packing.unpack_pairs_c(wname, bits)
            lines.extend("        " + s for s in unpack)
            for j, xn in enumerate(xs):
                lines.append(f"        a{c} = KWS_SMLAD({xn}, {names[j]}, a{c});")
    lines.append("      }")
    for c in range(g):
        acc = f"a{c}" if bits == 8 else f"(a{c} >> 4)"
        ch = f"{c0} + {c}" if c else c0
        req = _requant_c(f"{acc} + {bsym}[{ch}]", ch, params, y, fused)
        lines.append(f"      out[{ch}] = {req};")
    lines.append("    }")
    return "\n".join(lines)


# ---- depthwise with several input channels (direct loops) -----------------------------------
def _weight_reader(em: _Emitter, name: str, values: np.ndarray) -> str:
    """A C expression template ``{idx}`` -> weight value, from int8 or nibble storage."""
    flat = np.asarray(values, np.int64).reshape(-1)
    if em.bits == 8:
        sym = em.const_array(name, "int8_t", flat, weight=True)
        return f"(int32_t){sym}[{{idx}}]"
    sym = em.const_array(name, "uint8_t", packing.pack_nibbles(flat), weight=True)
    return f"kws_nibble({sym}, {{idx}})"


def _lower_depthwise(em: _Emitter, i: int, op: Operator) -> None:
    x = em.model.tensors[op.inputs[0]]
    f = _const(em, op.inputs[1])
    y = em.model.tensors[op.outputs[0]]
    o = op.options
    _, h, w, ic = x.shape
    _, oh, ow, oc = y.shape
    _, kh, kw, _ = f.shape
    mult_ch = oc // ic
    wvals = np.asarray(f.data, np.int64)[0]  # [kh, kw, oc]
    _check_weights(em, f, wvals)
    sh, sw = o["strideH"], o["strideW"]
    top = _padding(o["padding"], h, oh, sh, kh)
    left = _padding(o["padding"], w, ow, sw, kw)
    _, xzp = _q(x)
    if mult_ch == 1 and ic % 2 == 0 and em.bits == 8:
        _lower_depthwise_pairs(em, i, op, wvals, top, left)
        return
    before = em.weight_bytes
    wexpr = _weight_reader(em, f"l{i}_w", wvals)
    bias = em.const_array(f"l{i}_bias", "int32_t", _bias(em, op, oc))
    params = _requant_params(em, i, x, f, y, oc, per_tensor_fc=False)
    fused = o.get("fusedActivationFunction", 0)
    src = em.tensor_buf(op.inputs[0], i)
    dst = em.tensor_buf(op.outputs[0], i)
    widx = f"(ky * {kw} + kx) * {oc} + c"
    macs = oh * ow * oc * kh * kw
    em.layer(
        i,
        op,
        f"KWS_LAYER void kws_layer{i}(void) {{ /* DEPTHWISE_CONV_2D {kh}x{kw} x{mult_ch} */\n"
        f"  const int8_t *in = (const int8_t *){src};\n"
        f"  int8_t *out = (int8_t *){dst};\n"
        f"  for (int oy = 0; oy < {oh}; ++oy) for (int ox = 0; ox < {ow}; ++ox) {{\n"
        f"    int iy0 = oy * {sh} - {top}, ix0 = ox * {sw} - {left};\n"
        f"    for (int c = 0; c < {oc}; ++c) {{\n"
        f"      int32_t acc = 0;\n"
        f"      for (int ky = 0; ky < {kh}; ++ky) {{\n"
        f"        int iy = iy0 + ky; if (iy < 0 || iy >= {h}) continue;\n"
        f"        for (int kx = 0; kx < {kw}; ++kx) {{\n"
        f"          int ix = ix0 + kx; if (ix < 0 || ix >= {w}) continue;\n"
        f"          acc += ((int32_t)in[(iy * {w} + ix) * {ic} + c / {mult_ch}] - ({xzp})) * "
        f"{wexpr.format(idx=widx)};\n"
        f"        }}\n      }}\n"
        f"      out[(oy * {ow} + ox) * {oc} + c] = "
        f"{_requant_c(f'acc + {bias}[c]', 'c', params, y, fused)};\n"
        f"    }}\n  }}\n}}",
        "direct",
        macs,
        em.weight_bytes - before,
    )


def _lower_depthwise_pairs(
    em: _Emitter, i: int, op: Operator, wvals: np.ndarray, top: int, left: int
) -> None:
    """Depthwise, multiplier 1, even channel count: two channels per 32-bit load.

    In the padded int16 image neighbouring channels of a pixel are one word, and so are their
    (pre-widened) weights; ``SMLABB`` and ``SMLATT`` multiply-accumulate the low and the high
    halves into the two channels' accumulators. Taps are unrolled; channels are a C loop.
    """
    x = em.model.tensors[op.inputs[0]]
    f = em.model.tensors[op.inputs[1]]
    y = em.model.tensors[op.outputs[0]]
    o = op.options
    _, h, w, c = x.shape
    _, oh, ow, _ = y.shape
    kh, kw = wvals.shape[:2]
    sh, sw = o["strideH"], o["strideW"]
    pw = max(w + left, (ow - 1) * sw + kw)
    _, xzp = _q(x)
    wsym = em.const_array(
        f"l{i}_w", "uint8_t", packing.pack_words(wvals.reshape(-1, 2), 16), weight=True
    )
    bias = em.const_array(f"l{i}_bias", "int32_t", _bias(em, op, c))
    params = _requant_params(em, i, x, f, y, c, per_tensor_fc=False)
    fused = o.get("fusedActivationFunction", 0)
    src = em.tensor_buf(op.inputs[0], i)
    dst = em.tensor_buf(op.outputs[0], i)
    # A rolling band of kh widened rows (slot = padded row % kh), not the whole image.
    row = pw * c
    pad = em.scratch(f"s{i}", kh * row * 2 + 8, i)
    em.functions.append(_row_fill_fn(f"kws_l{i}_fill", src, h, w, c, top, left, pw, xzp))
    lines = ["int32_t a0 = 0, a1 = 0;"]
    for r in range(kh):
        for q in range(kw):
            lines.append(f"{{ uint32_t xv = kws_ld32(r{r} + off + {q * c * 2});")
            lines.append(f"  uint32_t wv = kws_ld32(wp + {(r * kw + q) * c * 2});")
            lines.append("  a0 = KWS_SMLABB(xv, wv, a0); a1 = KWS_SMLATT(xv, wv, a1); }")
    for k, ch in enumerate(("c", "c + 1")):
        req = _requant_c(f"a{k} + {bias}[{ch}]", ch, params, y, fused)
        lines.append(f"out[{ch}] = {req};")
    body = "\n".join("        " + line for line in lines)
    em.layer(
        i,
        op,
        f"KWS_LAYER void kws_layer{i}(void) {{ /* DEPTHWISE_CONV_2D {kh}x{kw}, channel pairs */\n"
        f"  int16_t *band = (int16_t *){pad};\n"
        f"  for (int j = 0; j < 4; ++j) band[{kh * row} + j] = 0;\n"
        f"  int next = 0;\n"
        f"  for (int oy = 0; oy < {oh}; ++oy) {{\n"
        f"    int first = oy * {sh};\n"
        f"    if (next < first) next = first;\n"
        f"    for (; next < first + {kh}; ++next)\n"
        f"      kws_l{i}_fill(band + (next % {kh}) * {row}, next);\n"
        + "".join(
            f"    const uint8_t *r{r} = (const uint8_t *)(band + ((first + {r}) % {kh}) * {row});\n"
            for r in range(kh)
        )
        + f"    for (int ox = 0; ox < {ow}; ++ox) {{\n"
        f"      int8_t *out = (int8_t *){dst} + (oy * {ow} + ox) * {c};\n"
        f"      for (int c = 0; c < {c}; c += 2) {{\n"
        f"        const int off = (ox * {sw * c} + c) * 2;\n"
        f"        const uint8_t *wp = {wsym} + c * 2;\n"
        f"{body}\n"
        f"      }}\n    }}\n  }}\n}}",
        "simd-depthwise",
        oh * ow * c * kh * kw,
        wvals.size * 2,
    )


# ---- pools, pad, softmax, mean, reshape -------------------------------------------------------
def _lower_pool(em: _Emitter, i: int, op: Operator) -> None:
    x = em.model.tensors[op.inputs[0]]
    y = em.model.tensors[op.outputs[0]]
    o = op.options
    _, h, w, c = x.shape
    _, oh, ow, _ = y.shape
    fh, fw, sh, sw = o["filterHeight"], o["filterWidth"], o["strideH"], o["strideW"]
    top = _padding(o["padding"], h, oh, sh, fh)
    left = _padding(o["padding"], w, ow, sw, fw)
    ys, yzp = _q(y)
    lo, hi = quantmath.activation_range(o.get("fusedActivationFunction", 0), ys, yzp)
    src = em.tensor_buf(op.inputs[0], i)
    dst = em.tensor_buf(op.outputs[0], i)
    if op.op == "AVERAGE_POOL_2D":
        init, step = "int32_t acc = 0, n = 0;", "acc += v; ++n;"
        final = "acc = acc > 0 ? (acc + n / 2) / n : (acc - n / 2) / n;"
    else:
        init, step, final = "int32_t acc = -128;", "acc = v > acc ? v : acc;", ""
    em.layer(
        i,
        op,
        f"KWS_LAYER void kws_layer{i}(void) {{ /* {op.op} {fh}x{fw} */\n"
        f"  const int8_t *in = (const int8_t *){src};\n"
        f"  int8_t *out = (int8_t *){dst};\n"
        f"  for (int oy = 0; oy < {oh}; ++oy) for (int ox = 0; ox < {ow}; ++ox)\n"
        f"  for (int ch = 0; ch < {c}; ++ch) {{\n"
        f"    {init}\n"
        f"    for (int ky = 0; ky < {fh}; ++ky) {{\n"
        f"      int iy = oy * {sh} - {top} + ky; if (iy < 0 || iy >= {h}) continue;\n"
        f"      for (int kx = 0; kx < {fw}; ++kx) {{\n"
        f"        int ix = ox * {sw} - {left} + kx; if (ix < 0 || ix >= {w}) continue;\n"
        f"        int32_t v = in[(iy * {w} + ix) * {c} + ch]; {step}\n"
        f"      }}\n    }}\n"
        f"    {final}\n"
        f"    acc = acc < {lo} ? {lo} : acc; acc = acc > {hi} ? {hi} : acc;\n"
        f"    out[(oy * {ow} + ox) * {c} + ch] = (int8_t)acc;\n"
        f"  }}\n}}",
        "direct",
    )


def _lower_pad(em: _Emitter, i: int, op: Operator) -> None:
    x = em.model.tensors[op.inputs[0]]
    y = em.model.tensors[op.outputs[0]]
    pads = np.asarray(_const(em, op.inputs[1]).data, np.int64).reshape(-1, 2)
    if len(x.shape) != 4 or pads[0].any() or pads[3].any():
        raise KwsError("op PAD is supported only on height and width of an NHWC tensor")
    _, h, w, c = x.shape
    ow = y.shape[2]
    _, yzp = _q(y)
    value = yzp
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        value = int(np.asarray(_const(em, op.inputs[2]).data).reshape(-1)[0])
    src = em.tensor_buf(op.inputs[0], i)
    dst = em.tensor_buf(op.outputs[0], i)
    top, left = int(pads[1, 0]), int(pads[2, 0])
    em.layer(
        i,
        op,
        f"KWS_LAYER void kws_layer{i}(void) {{ /* PAD */\n"
        f"  const int8_t *in = (const int8_t *){src};\n"
        f"  int8_t *out = (int8_t *){dst};\n"
        f"  __builtin_memset(out, ({value}) & 0xFF, {y.size});\n"
        f"  for (int r = 0; r < {h}; ++r)\n"
        f"    __builtin_memcpy(out + ((r + {top}) * {ow} + {left}) * {c}, in + r * {w * c}, "
        f"{w * c});\n"
        f"}}",
        "copy",
    )


def _lower_softmax(em: _Emitter, i: int, op: Operator) -> None:
    x = em.model.tensors[op.inputs[0]]
    y = em.model.tensors[op.outputs[0]]
    xs, _ = _q(x)
    ys, yzp = _q(y)
    if yzp != -128 or abs(float(ys) - 1 / 256) > 1e-9:
        raise KwsError(f"SOFTMAX output {y.name!r} must have scale 1/256 and zero point -128")
    multiplier, left_shift, diff_min = quantmath.softmax_params(op.options.get("beta", 1.0), xs)
    depth = x.shape[-1]
    src = em.tensor_buf(op.inputs[0], i)
    dst = em.tensor_buf(op.outputs[0], i)
    em.layer(
        i,
        op,
        f"KWS_LAYER void kws_layer{i}(void) {{ /* SOFTMAX */\n"
        f"  for (int r = 0; r < {x.size // depth}; ++r)\n"
        f"    kws_softmax_s8((const int8_t *){src} + r * {depth}, (int8_t *){dst} + r * {depth}, "
        f"{depth}, {multiplier}, {left_shift}, {diff_min});\n}}",
        "softmax",
    )


def _lower_reshape(em: _Emitter, i: int, op: Operator) -> None:
    # The output shares the input's bytes: extend the input buffer's life instead of copying.
    em.tensor_buf(op.inputs[0], i)
    em.tensor_buffer[op.outputs[0]] = em.tensor_buffer[op.inputs[0]]
    em.layers.append(LayerInfo(i, op.op, "alias", 0, 0, em.model.tensors[op.outputs[0]].shape))


def _lower_mean(em: _Emitter, i: int, op: Operator) -> None:
    """Global average pooling (MEAN over height and width), as TFLite's QuantizedMeanOrSum.

    The 1/count factor is folded into the multiplier exactly as TFLite does it:
    ``multiplier << shift / count`` with ``shift = min(floor(log2(count)), 32, 31 + out_shift)``.
    """
    x = em.model.tensors[op.inputs[0]]
    y = em.model.tensors[op.outputs[0]]
    axes = sorted(
        int(a) % max(len(x.shape), 1) for a in np.asarray(_const(em, op.inputs[1]).data).reshape(-1)
    )
    if len(x.shape) != 4 or axes != [1, 2]:
        raise KwsError(
            f"op MEAN over axes {axes} of a {len(x.shape)}-D tensor is not supported; "
            "only global average pooling (axes 1 and 2 of NHWC) is"
        )
    _, h, w, c = x.shape
    xs, xzp = _q(x)
    ys, yzp = _q(y)
    mult, shift = quantmath.quantize_multiplier(float(xs) / float(ys))
    count = h * w
    extra = min(count.bit_length() - 1, 32, 31 + shift)
    mult = int((mult << extra) // count) if extra >= 0 else int((mult >> -extra) // count)
    shift -= extra
    src = em.tensor_buf(op.inputs[0], i)
    dst = em.tensor_buf(op.outputs[0], i)
    em.layer(
        i,
        op,
        f"KWS_LAYER void kws_layer{i}(void) {{ /* MEAN over {h}x{w} */\n"
        f"  const int8_t *in = (const int8_t *){src};\n"
        f"  int8_t *out = (int8_t *){dst};\n"
        f"  for (int ch = 0; ch < {c}; ++ch) {{\n"
        f"    int32_t acc = 0;\n"
        f"    for (int p = 0; p < {count}; ++p) acc += in[p * {c} + ch];\n"
        f"    out[ch] = kws_requant(acc - ({xzp * count}), {mult}, {shift}, {yzp}, -128, 127);\n"
        f"  }}\n}}",
        "direct",
    )


_LOWER = {
    "CONV_2D": _lower_conv,
    "DEPTHWISE_CONV_2D": _lower_conv,
    "FULLY_CONNECTED": _lower_fc,
    "AVERAGE_POOL_2D": _lower_pool,
    "MAX_POOL_2D": _lower_pool,
    "MEAN": _lower_mean,
    "RESHAPE": _lower_reshape,
    "PAD": _lower_pad,
    "SOFTMAX": _lower_softmax,
}
