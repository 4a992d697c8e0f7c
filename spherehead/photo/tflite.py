"""A small TensorFlow Lite model reader and a PyTorch executor for it.

The face detector, face mesh and segmenter we ship are ``.tflite`` files (FlatBuffers). Rather than
depend on a TFLite runtime (mediapipe pins numpy<2 and protobuf<5; LiteRT is a 60 MB wheel), this
module reads the file with a minimal FlatBuffers decoder and runs its operators with PyTorch on
the CPU. Only the float operators these models use are implemented; anything else is refused by
name when the model is loaded, never silently skipped.

Tensors follow TFLite's layout: activations are ``[batch, H, W, channels]`` (NHWC), convolution
weights ``[out, kh, kw, in]``, depthwise weights ``[1, kh, kw, channels]``.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from spherehead.errors import UserError

# BuiltinOperator codes (tflite schema) of the operators implemented here.
OPS = {0: 'ADD', 1: 'AVERAGE_POOL_2D', 2: 'CONCATENATION', 3: 'CONV_2D', 4: 'DEPTHWISE_CONV_2D', 6: 'DEQUANTIZE',
       14: 'LOGISTIC', 17: 'MAX_POOL_2D', 18: 'MUL', 19: 'RELU', 22: 'RESHAPE', 23: 'RESIZE_BILINEAR', 32: 'CUSTOM',
       34: 'PAD', 54: 'PRELU', 117: 'HARD_SWISH'}
CUSTOM_OPS = ('Convolution2DTransposeBias',)            # mediapipe's transposed convolution with bias
TENSOR_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
SAME, VALID = 0, 1                                      # Padding enum
ACTIVATIONS = {0: None, 1: 'relu', 3: 'relu6'}          # ActivationFunctionType values used here


# ----------------------------------------------------------------------------- FlatBuffers decoding

class _Table:
    """One FlatBuffers table: fields are addressed by their index in the schema."""

    def __init__(self, buf: bytes, pos: int):
        self.buf, self.pos = buf, pos
        vtable = pos - struct.unpack_from('<i', buf, pos)[0]
        self.vt_len = struct.unpack_from('<H', buf, vtable)[0]
        self.vtable = vtable

    def _field(self, index: int) -> int:
        off = 4 + 2 * index
        if off >= self.vt_len:
            return 0
        rel = struct.unpack_from('<H', self.buf, self.vtable + off)[0]
        return self.pos + rel if rel else 0

    def scalar(self, index: int, fmt: str, default=0):
        p = self._field(index)
        return struct.unpack_from('<' + fmt, self.buf, p)[0] if p else default

    def _indirect(self, p: int) -> int:
        return p + struct.unpack_from('<I', self.buf, p)[0]

    def table(self, index: int) -> '_Table | None':
        p = self._field(index)
        return _Table(self.buf, self._indirect(p)) if p else None

    def _vector(self, index: int) -> tuple[int, int]:
        p = self._field(index)
        if not p:
            return 0, 0
        start = self._indirect(p)
        return start + 4, struct.unpack_from('<I', self.buf, start)[0]

    def tables(self, index: int) -> list['_Table']:
        start, n = self._vector(index)
        return [_Table(self.buf, self._indirect(start + 4 * i)) for i in range(n)]

    def array(self, index: int, dtype) -> np.ndarray:
        start, n = self._vector(index)
        return np.frombuffer(self.buf, dtype=np.dtype(dtype).newbyteorder('<'), count=n, offset=start) if n else \
            np.zeros(0, dtype)

    def string(self, index: int) -> str:
        start, n = self._vector(index)
        return self.buf[start:start + n].decode('utf-8', 'replace') if n else ''


# ----------------------------------------------------------------------------- the model

@dataclass
class Op:
    name: str                       # 'CONV_2D', ... or the custom operator's name
    inputs: list[int]
    outputs: list[int]
    options: _Table | None
    custom: bytes = b''


@dataclass
class Model:
    """A decoded single-subgraph model: constant tensors as torch tensors, operators in order."""
    name: str
    shapes: list[tuple[int, ...]]
    names: list[str]
    constants: dict[int, torch.Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]
    output_names: list[str] = field(default_factory=list)


def load_model(data: bytes, name: str) -> Model:
    """Decode a .tflite file's bytes. Raises UserError naming the file for anything unsupported."""
    if len(data) < 8 or data[4:8] != b'TFL3':
        raise UserError(f'{name}: not a TensorFlow Lite model (no TFL3 identifier); reinstall spherehead')
    root = _Table(data, struct.unpack_from('<I', data, 0)[0])
    codes = []
    for oc in root.tables(1):                                     # Model.operator_codes
        code = max(oc.scalar(0, 'b'), oc.scalar(3, 'i'))           # deprecated_builtin_code, builtin_code
        codes.append(oc.string(1) if code == 32 else OPS.get(code, f'builtin#{code}'))
    subgraphs = root.tables(2)
    if len(subgraphs) != 1:
        raise UserError(f'{name}: {len(subgraphs)} subgraphs; only single-subgraph models are supported')
    sg = subgraphs[0]
    buffers = root.tables(4)
    shapes, names, constants = [], [], {}
    for i, t in enumerate(sg.tables(0)):                          # SubGraph.tensors
        shape = tuple(int(s) for s in t.array(0, np.int32))
        shapes.append(shape)
        names.append(t.string(3))
        dtype = TENSOR_DTYPES.get(t.scalar(1, 'b'))
        buf = buffers[t.scalar(2, 'I')] if t.scalar(2, 'I') < len(buffers) else None
        raw = buf.array(0, np.uint8) if buf is not None else np.zeros(0, np.uint8)
        if raw.size:
            if dtype is None:
                raise UserError(f'{name}: tensor {names[-1]!r} has an unsupported type {t.scalar(1, "b")}')
            arr = np.frombuffer(raw.tobytes(), dtype=dtype).reshape(shape)
            constants[i] = torch.from_numpy(arr.astype(np.float32) if dtype in (np.float16, np.float32)
                                            else arr.astype(np.int64))
    ops = []
    for o in sg.tables(3):                                        # SubGraph.operators
        op_name = codes[o.scalar(0, 'I')]
        if op_name not in OPS.values() and op_name not in CUSTOM_OPS:
            raise UserError(f'{name}: operator {op_name} is not implemented by spherehead.photo.tflite')
        custom = o.array(5, np.uint8).tobytes()
        ops.append(Op(op_name, [int(x) for x in o.array(1, np.int32)], [int(x) for x in o.array(2, np.int32)],
                      o.table(4), custom))
    inputs = [int(x) for x in sg.array(1, np.int32)]
    outputs = [int(x) for x in sg.array(2, np.int32)]
    return Model(name, shapes, names, constants, ops, inputs, outputs, [names[i] for i in outputs])


# ----------------------------------------------------------------------------- execution

def _same_pad(size: int, k: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding (before, after) for one axis: the extra pixel goes after."""
    eff = (k - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def _pad_nchw(x: torch.Tensor, padding: int, kh: int, kw: int, sh: int, sw: int, dh: int = 1, dw: int = 1,
              value: float = 0.0) -> torch.Tensor:
    if padding != SAME:
        return x
    top, bottom = _same_pad(x.shape[2], kh, sh, dh)
    left, right = _same_pad(x.shape[3], kw, sw, dw)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


def _activate(x: torch.Tensor, code: int) -> torch.Tensor:
    kind = ACTIVATIONS.get(code, 'unknown')
    if kind is None:
        return x
    if kind == 'relu':
        return F.relu(x)
    if kind == 'relu6':
        return x.clamp(0, 6)
    raise UserError(f'fused activation {code} is not implemented by spherehead.photo.tflite')


def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


class Runner:
    """Runs a Model: ``Runner(model)(x)`` with x a float32 ``[1, H, W, C]`` tensor -> list of outputs."""

    def __init__(self, model: Model):
        self.model = model

    @torch.no_grad()
    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        m = self.model
        values: dict[int, torch.Tensor] = dict(m.constants)
        for i, x in zip(m.inputs, inputs):
            values[i] = x.float()
        for op in m.ops:
            args = [values[i] if i >= 0 else None for i in op.inputs]
            out = getattr(self, '_' + op.name.lower())(op, *args)
            values[op.outputs[0]] = out
        return [values[i] for i in m.outputs]

    # each handler: (op, *input tensors) -> output tensor (NHWC where 4-D)

    def _conv_2d(self, op, x, w, b=None):
        o = op.options
        pad, sw, sh, act, dw, dh = o.scalar(0, 'b'), o.scalar(1, 'i'), o.scalar(2, 'i'), o.scalar(3, 'b'), \
            o.scalar(4, 'i', 1), o.scalar(5, 'i', 1)
        xc = _pad_nchw(_nchw(x), pad, w.shape[1], w.shape[2], sh, sw, dh, dw)
        y = F.conv2d(xc, w.permute(0, 3, 1, 2), b, stride=(sh, sw), dilation=(dh, dw))
        return _activate(_nhwc(y), act)

    def _depthwise_conv_2d(self, op, x, w, b=None):
        o = op.options
        pad, sw, sh, mult, act, dw, dh = o.scalar(0, 'b'), o.scalar(1, 'i'), o.scalar(2, 'i'), o.scalar(3, 'i'), \
            o.scalar(4, 'b'), o.scalar(5, 'i', 1), o.scalar(6, 'i', 1)
        cin = x.shape[3]
        if w.shape[3] != cin * max(mult, 1):
            raise UserError(f'{self.model.name}: depthwise weights {tuple(w.shape)} do not fit {cin} input channels')
        xc = _pad_nchw(_nchw(x), pad, w.shape[1], w.shape[2], sh, sw, dh, dw)
        # [1, kh, kw, cin*mult] -> [cin*mult, 1, kh, kw]; output channel c*mult + m reads input channel c
        y = F.conv2d(xc, w.permute(3, 0, 1, 2), b, stride=(sh, sw), dilation=(dh, dw), groups=cin)
        return _activate(_nhwc(y), act)

    def _pool(self, op, x, kind: str):
        o = op.options
        pad, sw, sh, fw, fh, act = (o.scalar(0, 'b'), o.scalar(1, 'i'), o.scalar(2, 'i'), o.scalar(3, 'i'),
                                    o.scalar(4, 'i'), o.scalar(5, 'b'))
        xc = _nchw(x)
        if kind == 'max':
            xc = _pad_nchw(xc, pad, fh, fw, sh, sw, value=float('-inf'))
            y = F.max_pool2d(xc, (fh, fw), (sh, sw))
        else:                                   # TFLite averages over the valid (unpadded) pixels only
            ones = torch.ones_like(xc[:, :1])
            xs, cnt = _pad_nchw(xc, pad, fh, fw, sh, sw), _pad_nchw(ones, pad, fh, fw, sh, sw)
            y = F.avg_pool2d(xs, (fh, fw), (sh, sw)) / F.avg_pool2d(cnt, (fh, fw), (sh, sw))
        return _activate(_nhwc(y), act)

    def _max_pool_2d(self, op, x):
        return self._pool(op, x, 'max')

    def _average_pool_2d(self, op, x):
        return self._pool(op, x, 'avg')

    def _add(self, op, a, b):
        return _activate(a + b, op.options.scalar(0, 'b') if op.options else 0)

    def _mul(self, op, a, b):
        return _activate(a * b, op.options.scalar(0, 'b') if op.options else 0)

    def _relu(self, op, x):
        return F.relu(x)

    def _prelu(self, op, x, alpha):
        return torch.where(x >= 0, x, x * alpha)

    def _logistic(self, op, x):
        return torch.sigmoid(x)

    def _hard_swish(self, op, x):
        return x * (x + 3).clamp(0, 6) / 6

    def _dequantize(self, op, x):
        return x.float()

    def _pad(self, op, x, paddings):
        p = paddings.reshape(-1, 2).tolist()          # per axis (before, after), NHWC
        flat = []
        for before, after in reversed(p):
            flat += [int(before), int(after)]
        return F.pad(x, flat)

    def _reshape(self, op, x, shape=None):
        if shape is not None:
            new = [int(s) for s in shape.reshape(-1).tolist()]
        else:
            new = [int(s) for s in op.options.array(0, np.int32)]
        return x.reshape(new)

    def _concatenation(self, op, *xs):
        axis = op.options.scalar(0, 'i')
        return _activate(torch.cat(xs, dim=axis), op.options.scalar(1, 'b'))

    def _resize_bilinear(self, op, x, size):
        align = bool(op.options.scalar(2, 'B')) if op.options else False
        half = bool(op.options.scalar(3, 'B')) if op.options else False
        h, w = (int(v) for v in size.reshape(-1).tolist())
        if align:
            y = F.interpolate(_nchw(x), size=(h, w), mode='bilinear', align_corners=True)
        elif half:
            y = F.interpolate(_nchw(x), size=(h, w), mode='bilinear', align_corners=False)
        else:                                   # legacy TF: source = dst * in/out, no half-pixel shift
            y = _resize_legacy(_nchw(x), h, w)
        return _nhwc(y)

    def _convolution2dtransposebias(self, op, x, w, b):
        # mediapipe's custom op: its options are a TfLiteTransposeConvParams struct (padding, stride_w, stride_h).
        pad, sw, sh = struct.unpack_from('<iii', op.custom, 0)
        kh, kw = w.shape[1], w.shape[2]
        y = F.conv_transpose2d(_nchw(x), w.permute(3, 0, 1, 2), b, stride=(sh, sw))
        out_h, out_w = x.shape[1] * sh, x.shape[2] * sw
        if pad == 1:                            # TfLitePadding: 1 = SAME (crop to in * stride), 2 = VALID
            th, tw = max(kh - sh, 0), max(kw - sw, 0)
            y = y[:, :, th // 2:th // 2 + out_h, tw // 2:tw // 2 + out_w]
        return _nhwc(y)


def _resize_legacy(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """TensorFlow's original bilinear resize (no half-pixel centres), x: [N, C, H, W]."""
    def coords(n_out, n_in):
        src = torch.arange(n_out, dtype=torch.float32) * (n_in / n_out)
        i0 = src.floor().clamp(max=n_in - 1).long()
        return i0, (i0 + 1).clamp(max=n_in - 1), src - i0
    y0, y1, fy = coords(h, x.shape[2])
    x0, x1, fx = coords(w, x.shape[3])
    top = x[:, :, y0][:, :, :, x0] * (1 - fx) + x[:, :, y0][:, :, :, x1] * fx
    bot = x[:, :, y1][:, :, :, x0] * (1 - fx) + x[:, :, y1][:, :, :, x1] * fx
    return top * (1 - fy[:, None]) + bot * fy[:, None]
