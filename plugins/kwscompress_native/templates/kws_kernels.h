/* Shared helpers of the generated kernels (kwscompress_native). Plain C99.
 *
 * Integer arithmetic follows TFLite's int8 kernels: MultiplyByQuantizedMultiplier with
 * gemmlowp's SaturatingRoundingDoublingHighMul and RoundingDivideByPOT, and the int8 softmax of
 * TFLM's reference kernel (gemmlowp fixed point exp and reciprocal). Written from the
 * published algorithms, checked bit for bit against TFLM by the tests.
 *
 * 16-bit SIMD: with __ARM_FEATURE_DSP the ACLE intrinsics __smlad / __sxtb16 / __ror map to
 * single Cortex-M4 instructions; elsewhere portable functions compute the same values.
 */
#ifndef KWS_KERNELS_H
#define KWS_KERNELS_H

#include <stdint.h>
#include <stddef.h>

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define KWS_SMLAD(x, y, acc) ((int32_t)__smlad((x), (y), (acc)))
#define KWS_SXTB16(x) ((uint32_t)__sxtb16(x))
#define KWS_SXTB16_ROR8(x) ((uint32_t)__sxtb16(__ror((x), 8)))
#define KWS_QADD(a, b) __qadd((a), (b))
#define KWS_SMLABB(x, y, acc) __smlabb((int32_t)(x), (int32_t)(y), (acc))
#define KWS_SMLATT(x, y, acc) __smlatt((int32_t)(x), (int32_t)(y), (acc))
#else
static inline int32_t kws_qadd(int32_t a, int32_t b) {
  int64_t t = (int64_t)a + b;
  return t > INT32_MAX ? INT32_MAX : (t < INT32_MIN ? INT32_MIN : (int32_t)t);
}
#define KWS_QADD(a, b) kws_qadd((a), (b))
#define KWS_SMLABB(x, y, acc) \
  ((int32_t)((uint32_t)(acc) + (uint32_t)((int32_t)(int16_t)((x) & 0xFFFFu) * \
                                          (int32_t)(int16_t)((y) & 0xFFFFu))))
#define KWS_SMLATT(x, y, acc) \
  ((int32_t)((uint32_t)(acc) + (uint32_t)((int32_t)(int16_t)((x) >> 16) * \
                                          (int32_t)(int16_t)((y) >> 16))))
/* Out of line on purpose: inlined into the long unrolled kernels, these expressions make GCC's
 * instruction combiner take minutes; as calls the host build compiles in about a second. */
__attribute__((noinline)) static int32_t kws_smlad(uint32_t x, uint32_t y, int32_t acc) {
  int32_t lo = (int32_t)(int16_t)(x & 0xFFFFu) * (int32_t)(int16_t)(y & 0xFFFFu);
  int32_t hi = (int32_t)(int16_t)(x >> 16) * (int32_t)(int16_t)(y >> 16);
  return (int32_t)((uint32_t)acc + (uint32_t)lo + (uint32_t)hi);
}
__attribute__((noinline)) static uint32_t kws_sxtb16(uint32_t x) {
  uint32_t lo = (uint32_t)(uint16_t)(int16_t)(int8_t)(x & 0xFFu);
  uint32_t hi = (uint32_t)(uint16_t)(int16_t)(int8_t)((x >> 16) & 0xFFu);
  return lo | (hi << 16);
}
#define KWS_SMLAD(x, y, acc) kws_smlad((x), (y), (acc))
#define KWS_SXTB16(x) kws_sxtb16(x)
#define KWS_SXTB16_ROR8(x) kws_sxtb16(((x) >> 8) | ((x) << 24))
#endif

/* Each layer stays its own function so the emulator can attribute instructions per layer. */
#define KWS_LAYER __attribute__((noinline)) static

/* A layer's row fill (zero padding and the zero point taken off) is called once per row of a
   block. Inlined, clang unrolls the block loop into one copy of the fill per row (2.3 KB more
   flash for the default model for 0.03 % fewer cycles), so under clang it stays a function.
   GCC keeps it inline: as a separate function, GCC 12 -O2 dropped the calls to it after
   interprocedural constant propagation specialized it for the constant band pointer (observed;
   -fno-ipa-cp and clang built it correctly). */
#if defined(__clang__)
#define KWS_ROW_FILL __attribute__((noinline)) static
#else
#define KWS_ROW_FILL static inline
#endif

/* A 32-bit load from any alignment (one LDR on Cortex-M4, which allows unaligned LDR). */
static inline uint32_t kws_ld32(const void *p) {
  uint32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
}

static inline int32_t kws_srdhm(int32_t a, int32_t b) {
  if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
  int64_t ab = (int64_t)a * (int64_t)b;
  int64_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
  return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

static inline int32_t kws_rdbp(int32_t x, int exponent) {
  int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
  int32_t remainder = x & mask;
  int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* MultiplyByQuantizedMultiplier (TFLite's default, double rounding). The multiplier is
 * positive, so the saturating corner of SRDHM (both INT32_MIN) cannot occur here. */
static inline int32_t kws_mbqm(int32_t x, int32_t multiplier, int shift) {
  int left = shift > 0 ? shift : 0;
  int right = shift > 0 ? 0 : -shift;
  int64_t ab = (int64_t)(int32_t)((uint32_t)x << left) * (int64_t)multiplier;
  int64_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
  return kws_rdbp((int32_t)((ab + nudge) / ((int64_t)1 << 31)), right);
}

static inline int8_t kws_requant(int32_t acc, int32_t multiplier, int shift, int32_t out_zp,
                                 int32_t act_min, int32_t act_max) {
  int32_t v = kws_mbqm(acc, multiplier, shift) + out_zp;
  v = v < act_min ? act_min : v;
  v = v > act_max ? act_max : v;
  return (int8_t)v;
}

/* kws_requant for a right shift `right` in 1..23 (the usual case), in fewer instructions:
 * SaturatingRoundingDoublingHighMul is exactly (x * m + 2^30) >> 31 for a positive m, and
 * RoundingDivideByPOT(s, right) is exactly (s + 2^(right-1) - (s < 0)) >> right. The one
 * saturating add (QADD) only engages where TFLite's result exceeds 2^(31-right) - 1 >= 255,
 * which clamps to the same int8 output. */
static inline int8_t kws_requant_r(int32_t acc, int32_t multiplier, int32_t round, int right,
                                   int32_t out_zp, int32_t act_min, int32_t act_max) {
  int32_t s = (int32_t)(((int64_t)acc * multiplier + ((int64_t)1 << 30)) >> 31);
  int32_t v = ((int32_t)KWS_QADD(s, round) + (s >> 31)) >> right;
  v += out_zp;
  v = v < act_min ? act_min : v;
  v = v > act_max ? act_max : v;
  return (int8_t)v;
}

/* One signed weight from nibble-packed storage: even index = low nibble. */
static inline int32_t kws_nibble(const uint8_t *p, int i) {
  int32_t b = (int32_t)(int8_t)p[i >> 1];
  return (i & 1) ? (b >> 4) : ((int32_t)(int8_t)(uint8_t)(b << 4) >> 4);
}

/* ---- gemmlowp fixed point, int32 raw values ---- */
static inline int32_t kws_srmbpot(int32_t x, int exponent) { /* SaturatingRoundingMultiplyByPOT */
  if (exponent > 0) {
    int32_t threshold = (int32_t)(((int64_t)1 << (31 - exponent)) - 1);
    if (x > threshold) return INT32_MAX;
    if (x < -threshold) return INT32_MIN;
    return (int32_t)((uint32_t)x << exponent);
  }
  return exponent < 0 ? kws_rdbp(x, -exponent) : x;
}

static inline int32_t kws_exp_quarter(int32_t a) { /* a in [-1/4, 0), Q0.31 */
  const int32_t constant_term = 1895147668;
  const int32_t one_third = 715827883;
  int32_t x = a + (1 << 28);
  int32_t x2 = kws_srdhm(x, x);
  int32_t x3 = kws_srdhm(x2, x);
  int32_t x4 = kws_srdhm(x2, x2);
  int32_t x4_over_4 = kws_rdbp(x4, 2);
  int32_t poly = kws_rdbp(kws_srdhm(x4_over_4 + x3, one_third) + x2, 1);
  return constant_term + kws_srdhm(constant_term, x + poly);
}

/* exp_on_negative_values for FixedPoint<int32, 5> input, Q0.31 result. */
static inline int32_t kws_exp_neg_q5(int32_t a) {
  const int frac = 26;
  const int32_t one_quarter = 1 << (frac - 2);
  int32_t a_mod = (a & (one_quarter - 1)) - one_quarter;
  int32_t result = kws_exp_quarter(kws_srmbpot(a_mod, 5));
  int32_t remainder = a_mod - a;
  static const int32_t mult[7] = {1672461947, 1302514674, 790015084, 290630308,
                                  39332535,   720401,     242};
  for (int e = -2; e <= 4; ++e) {
    if (remainder & (1 << (frac + e))) result = kws_srdhm(result, mult[e + 2]);
  }
  return a == 0 ? INT32_MAX : result;
}

static inline int32_t kws_one_over_one_plus_x(int32_t a) { /* Q0.31 in, Q0.31 out */
  int64_t sum = (int64_t)a + INT32_MAX;
  int32_t half_den = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
  int32_t x = 1515870810 + kws_srdhm(half_den, -1010580540); /* Q2.29 */
  for (int i = 0; i < 3; ++i) {
    int32_t hdx = kws_srdhm(half_den, x);
    int32_t one_minus = (1 << 29) - hdx;
    x = x + kws_srmbpot(kws_srdhm(x, one_minus), 2);
  }
  return kws_srmbpot(x >> 1, 2);
}

static inline void kws_softmax_s8(const int8_t *in, int8_t *out, int depth, int32_t multiplier,
                                  int left_shift, int32_t diff_min) {
  int32_t max_in = -128;
  for (int c = 0; c < depth; ++c) max_in = in[c] > max_in ? in[c] : max_in;
  int32_t sum = 0; /* FixedPoint<int32, 12> */
  for (int c = 0; c < depth; ++c) {
    int32_t diff = (int32_t)in[c] - max_in;
    if (diff >= diff_min) {
      int32_t scaled = kws_srdhm((int32_t)((uint32_t)diff << left_shift), multiplier);
      sum += kws_rdbp(kws_exp_neg_q5(scaled), 12);
    }
  }
  int headroom = sum == 0 ? 32 : __builtin_clz((uint32_t)sum);
  int bits_over_unit = 12 - headroom;
  int32_t shifted = (int32_t)(((uint32_t)sum << headroom) - ((uint32_t)1 << 31));
  int32_t scale = kws_one_over_one_plus_x(shifted);
  for (int c = 0; c < depth; ++c) {
    int32_t diff = (int32_t)in[c] - max_in;
    if (diff >= diff_min) {
      int32_t scaled = kws_srdhm((int32_t)((uint32_t)diff << left_shift), multiplier);
      int32_t e = kws_exp_neg_q5(scaled);
      int32_t v = kws_rdbp(kws_srdhm(scale, e), bits_over_unit + 31 - 8) - 128;
      out[c] = (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
    } else {
      out[c] = -128;
    }
  }
}

#endif
