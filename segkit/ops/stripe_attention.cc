// HRViT's cross-shaped stripe attention without gradients for Paddle's dygraph on the CPU, as one
// operator reading the fused query/value linear's output where it lies. Composed of Paddle operators
// the attention of one HRViT block is ~40 of them: heads-first copies of the queries and values, zero
// padding to whole stripes, a -100 mask on the padded keys, two batched products and a softmax per
// direction, and copies back to tokens (HRViT-b1 at 512x512: ~130 ms of a ~500 ms forward). Here every
// (image, head, stripe) is one task: two small GEMMs (oneDNN's sgemm, run on the calling thread inside
// the parallel loop) around a softmax of the stripe's logits in a thread's scratch buffer. A stripe cut
// by the map's edge attends over its valid tokens only; upstream's -100 logits on padded keys (zero
// vectors) weigh exp(-100) against the valid keys, which changes no float32 result unless every valid
// logit of a row is below about -90.
//
//   segkit_stripe_attention(QV [B, H, W, 4 * heads * d], heads, stripe) -> Out [B, H, W, 2 * heads * d]
//     QV's channels: queries of the horizontal-stripe heads, queries of the vertical-stripe heads,
//     values (also the keys) in the same order, d channels per head; queries already scaled. Out: the
//     horizontal heads' outputs, then the vertical heads'. Horizontal stripes are ``stripe`` rows tall,
//     vertical ones ``stripe`` columns wide. Float32, contiguous; inference only (no gradient operator:
//     segkit calls it where no gradient is needed).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "oneapi/dnnl/dnnl.h"
#include "paddle/extension.h"

namespace {

// Vectors are passed only to inlined functions: GCC's note that their ABI depends on the ISA does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

// Sixteen floats as one value (GCC vector extensions: one AVX-512 register, two AVX2 ones, four SSE ones).
typedef float Floats __attribute__((vector_size(64)));
typedef int32_t Int32s __attribute__((vector_size(64)));
constexpr int64_t kLanes = sizeof(Floats) / sizeof(float);

__attribute__((always_inline)) inline Floats load(const float* from) {
  Floats v;
  std::memcpy(&v, from, sizeof(v));
  return v;
}

__attribute__((always_inline)) inline void store(float* to, Floats v) { std::memcpy(to, &v, sizeof(v)); }

// exp(x) for x <= 0 (logits minus their row's maximum): Cephes' polynomial on x - n ln 2, times 2^n; within
// 2 ulp of expf above -87, where it stops (exp(-87) = 1.6e-38, the smallest non-denormal result).
__attribute__((always_inline)) inline Floats exp_nonpositive(Floats x) {
  x = x < -87.0f ? Floats{} - 87.0f : x;
  const Int32s whole = __builtin_convertvector(x * 1.44269504f - 0.5f, Int32s);  // x <= 0: rounds to nearest
  const Floats n = __builtin_convertvector(whole, Floats);
  const Floats r = x - n * 0.693359375f + n * 2.12194440e-4f;  // ln 2 in two parts
  Floats p = Floats{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const Int32s power = (whole + 127) << 23;  // the bits of 2^n (n >= -126)
  Floats scale;
  std::memcpy(&scale, &power, sizeof(scale));
  return p * scale;
}

// Softmax of ``row`` [t], in place: whole vectors, then the tail through a padded vector.
__attribute__((target_clones("avx512f", "avx2", "default"))) void softmax_row(float* row, int64_t t) {
  const int64_t whole = t - t % kLanes;
  float top = row[0];
  if (whole) {
    Floats most = load(row);
    for (int64_t j = kLanes; j < whole; j += kLanes) {
      const Floats v = load(row + j);
      most = v > most ? v : most;
    }
    for (int64_t l = 0; l < kLanes; ++l) top = std::max(top, most[l]);
  }
  for (int64_t j = whole; j < t; ++j) top = std::max(top, row[j]);
  Floats sums = {};
  for (int64_t j = 0; j < whole; j += kLanes) {
    const Floats e = exp_nonpositive(load(row + j) - top);
    store(row + j, e);
    sums += e;
  }
  float sum = 0.0f;
  if (whole < t) {
    float tail[kLanes] = {};
    std::memcpy(tail, row + whole, (t - whole) * sizeof(float));
    const Floats e = exp_nonpositive(load(tail) - top);
    for (int64_t l = 0; l < t - whole; ++l) sum += (row[whole + l] = e[l]);
  }
  for (int64_t l = 0; l < kLanes; ++l) sum += sums[l];
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < t; ++j) row[j] *= inv;
}

void sgemm(char trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
           float* c, int64_t ldc) {
  const dnnl_status_t status = dnnl_sgemm('N', trans_b, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
  PD_CHECK(status == dnnl_success, "segkit_stripe_attention: oneDNN's sgemm failed (status ", int(status), ")");
}

// Attention of ``t`` tokens: queries ``q`` and values ``v`` [t, d] with row strides ``ldq`` / ``ldv``
// into ``out`` [t, d] with row stride ``ldo``; ``logits`` holds t * t floats.
void attend(const float* q, int64_t ldq, const float* v, int64_t ldv, float* out, int64_t ldo, int64_t t,
            int64_t d, float* logits) {
  sgemm('T', t, t, d, q, ldq, v, ldv, logits, t);
  for (int64_t i = 0; i < t; ++i) softmax_row(logits + i * t, t);
  sgemm('N', t, d, t, logits, t, v, ldv, out, ldo);
}

}  // namespace

std::vector<paddle::Tensor> StripeAttentionForward(const paddle::Tensor& qv, int heads, int stripe) {
  PD_CHECK(qv.is_cpu() && qv.dtype() == paddle::DataType::FLOAT32 && qv.shape().size() == 4,
           "segkit_stripe_attention: float32 CPU QV [B, H, W, 4 * heads * d]");
  PD_CHECK(heads > 0 && stripe > 0 && qv.shape()[3] % (4 * heads) == 0,
           "segkit_stripe_attention: QV's channels are a multiple of 4 * heads; heads, stripe > 0");
  const int64_t b = qv.shape()[0], h = qv.shape()[1], w = qv.shape()[2], wide = qv.shape()[3];
  const int64_t d = wide / (4 * heads), c = wide / 2;  // c: output channels
  paddle::Tensor out = paddle::empty({b, h, w, c}, paddle::DataType::FLOAT32, qv.place());
  const float* src = qv.data<float>();
  float* dst = out.data<float>();
  const int64_t row_stripes = (h + stripe - 1) / stripe, col_stripes = (w + stripe - 1) / stripe;
  const int64_t row_tasks = b * heads * row_stripes, tasks = row_tasks + b * heads * col_stripes;
  const int64_t most = std::max(std::min<int64_t>(stripe, h) * w, std::min<int64_t>(stripe, w) * h);
#pragma omp parallel
  {
    std::vector<float> logits(most * most), gathered(3 * most * d);  // queries, values, outputs of a column stripe
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      if (task < row_tasks) {  // horizontal: the stripe's tokens are consecutive rows of QV
        const int64_t image = task / (heads * row_stripes), head = task / row_stripes % heads;
        const int64_t top = task % row_stripes * stripe, t = std::min<int64_t>(stripe, h - top) * w;
        const int64_t token = (image * h + top) * w;
        const float* q = src + token * wide + head * d;
        attend(q, wide, q + 2 * heads * d, wide, dst + token * c + head * d, c, t, d, logits.data());
        continue;
      }
      const int64_t k = task - row_tasks;  // vertical: gather the stripe's tokens, attend, scatter
      const int64_t image = k / (heads * col_stripes), head = k / col_stripes % heads;
      const int64_t left = k % col_stripes * stripe, cols = std::min<int64_t>(stripe, w - left), t = h * cols;
      float* q = gathered.data();
      float* v = q + t * d;
      float* o = v + t * d;
      const int64_t q_at = (heads + head) * d, v_at = (3 * heads + head) * d;
      for (int64_t i = 0; i < t; ++i) {
        const float* from = src + ((image * h + i / cols) * w + left + i % cols) * wide;
        std::memcpy(q + i * d, from + q_at, d * sizeof(float));
        std::memcpy(v + i * d, from + v_at, d * sizeof(float));
      }
      attend(q, d, v, d, o, d, t, d, logits.data());
      for (int64_t i = 0; i < t; ++i) {
        std::memcpy(dst + ((image * h + i / cols) * w + left + i % cols) * c + (heads + head) * d, o + i * d,
                    d * sizeof(float));
      }
    }
  }
  return {out};
}

PD_BUILD_OP(segkit_stripe_attention)
    .Inputs({"QV"})
    .Outputs({"Out"})
    .Attrs({"heads: int", "stripe: int"})
    .SetKernelFn(PD_KERNEL(StripeAttentionForward));
