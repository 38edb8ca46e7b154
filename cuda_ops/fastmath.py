"""Vectorisable float32 maths for numba CPU kernels: exp, expm1, log, log1p without library
calls, so that LLVM can vectorise the loops that use them.

exp and log are evaluated with float32 range reduction + short polynomials (within 5 ulp);
the bit tricks (exponent, mantissa, 2**n, rint) are LLVM intrinsics. Used by the fused loss
kernels (:mod:`cuda_ops.cpu_kernels`) and by the shard encoder (``shards.encode``); it imports
neither torch nor anything else of ``cuda_ops``.

Helpers are inlined into the caller at numba-IR level (``INLINE``): LLVM alone declines to
inline a helper used several times, and an out-of-line call stops a class loop from
vectorising. Only kernels are cached (``KERNEL``): a helper loaded from the cache is object
code, not inlinable.
"""
import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

F32 = np.float32
ZERO = F32(0.0)
ONE = F32(1.0)
_TWO = F32(2.0)
_HALF = F32(0.5)
_LOG2E = F32(1.4426950408889634)
_LN2_HI = F32(0.693145751953125)  # ln 2 split so that n * _LN2_HI is exact (Cody-Waite)
_LN2_LO = F32(1.428606765330187e-06)
_LN2 = F32(0.6931471805599453)
_SQRT2 = F32(1.4142135623730951)
_EXP_MIN_ARG = F32(-87.0)  # exp(-87) ~ 1.6e-38, still a normal float32
FLT_MIN = F32(1.1754943508222875e-38)


INLINE = dict(fastmath=True, error_model="numpy", inline="always")


# --------------------------------------------------------------------------- bit tricks
@intrinsic
def _rint(typingctx, x):
    """Round a float32 to the nearest integer value (still float32)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.rint", [ir.FloatType()])
        return builder.call(fn, args)

    return types.float32(types.float32), codegen


@intrinsic
def _pow2(typingctx, n):
    """``2 ** n`` for a float32 holding an integer in [-126, 127], built from its bits."""
    if n != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.fptosi(args[0], i32)
        bits = builder.add(bits, ir.Constant(i32, 127))
        bits = builder.shl(bits, ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.float32), codegen


@intrinsic
def _exponent(typingctx, x):
    """Unbiased binary exponent of a positive normal float32, as float32."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.bitcast(args[0], i32)
        biased = builder.lshr(bits, ir.Constant(i32, 23))
        return builder.sitofp(builder.sub(biased, ir.Constant(i32, 127)), ir.FloatType())

    return types.float32(types.float32), codegen


@intrinsic
def _mantissa(typingctx, x):
    """Mantissa in [1, 2) of a positive normal float32."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.bitcast(args[0], i32)
        bits = builder.and_(bits, ir.Constant(i32, 0x007FFFFF))
        bits = builder.or_(bits, ir.Constant(i32, 0x3F800000))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.float32), codegen


# --------------------------------------------------------------------------- float32 maths
@njit(**INLINE)
def expm1_split(y):
    """Return ``(s, m)`` with ``exp(y) = s * m + s`` and ``expm1(y) = s * m + (s - 1)``.

    ``y`` float32, clamped to [-87, 0]; ``s = 2**n`` and ``m = expm1(r)`` for the reduced
    argument ``r = y - n ln 2`` in [-ln2/2, ln2/2] (degree-7 Taylor, error < 2e-8 relative).
    """
    y = min(max(y, _EXP_MIN_ARG), ZERO)
    n = _rint(y * _LOG2E)
    r = (y - n * _LN2_HI) - n * _LN2_LO
    poly = F32(1.0 / 5040.0)
    poly = poly * r + F32(1.0 / 720.0)
    poly = poly * r + F32(1.0 / 120.0)
    poly = poly * r + F32(1.0 / 24.0)
    poly = poly * r + F32(1.0 / 6.0)
    poly = poly * r + _HALF
    m = r + r * r * poly
    return _pow2(n), m


@njit(**INLINE)
def exp_neg(y):
    """``exp(y)`` for float32 ``y <= 0``; exactly 0 below -87 (no denormals)."""
    s, m = expm1_split(y)
    return s * m + s if y >= _EXP_MIN_ARG else ZERO


@njit(**INLINE)
def expm1_neg(y):
    """``expm1(y)`` for float32 ``y <= 0`` (accurate for tiny ``|y|``); -1 below -87."""
    s, m = expm1_split(y)
    return s * m + (s - ONE)


@njit(**INLINE)
def log1p_unit(e):
    """``log1p(e)`` for float32 ``e`` in [0, 1] via ``2 atanh(e / (2 + e))``."""
    s = e / (_TWO + e)  # in [0, 1/3]
    s2 = s * s
    poly = F32(1.0 / 13.0)
    poly = poly * s2 + F32(1.0 / 11.0)
    poly = poly * s2 + F32(1.0 / 9.0)
    poly = poly * s2 + F32(1.0 / 7.0)
    poly = poly * s2 + F32(1.0 / 5.0)
    poly = poly * s2 + F32(1.0 / 3.0)
    return _TWO * s + _TWO * s * s2 * poly


@njit(**INLINE)
def log_pos(v):
    """``log(v)`` for float32 ``v``; arguments below the smallest normal are raised to it."""
    v = max(v, FLT_MIN)
    m = _mantissa(v)
    k = _exponent(v)
    big = m > _SQRT2
    m = m * _HALF if big else m  # now in (0.707, 1.414]
    k = k + ONE if big else k
    s = (m - ONE) / (m + ONE)  # |s| <= 0.172
    s2 = s * s
    poly = F32(1.0 / 11.0)
    poly = poly * s2 + F32(1.0 / 9.0)
    poly = poly * s2 + F32(1.0 / 7.0)
    poly = poly * s2 + F32(1.0 / 5.0)
    poly = poly * s2 + F32(1.0 / 3.0)
    return k * _LN2 + (_TWO * s + _TWO * s * s2 * poly)
