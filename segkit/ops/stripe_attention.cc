// HRViT's cross-shaped stripe attention for Paddle's dygraph on the CPU, forward and gradient, as one operator
// reading the fused query/value linear's output. Composed of Paddle operators the attention of one HRViT
// block is ~40 of them: heads-first copies of the queries and values, zero padding to whole stripes, a -100
// mask on the padded keys, two batched products and a softmax per direction, copies back to tokens, and
// their gradients (HRViT-b1 at 512x512: ~130 ms of a ~500 ms forward). Here every (image, head, stripe) is
// one task: its tokens' queries and values gathered into a thread's scratch buffers, two small GEMMs
// (oneDNN's sgemm, on the calling thread inside the parallel loop) around a vectorised softmax, the result
// scattered back. The gradient recomputes the probabilities instead of keeping them (HRViT-b1: ~200 MB per
// 512x512 image). A stripe cut by the map's edge attends over its valid tokens only; upstream's -100
// logits on padded keys (zero vectors) weigh exp(-100) against the valid keys, which changes no float32
// result unless every valid logit of a row is below about -90.
//
//   segkit_stripe_attention(QV [B, H, W, 4 * heads * d], heads, stripe) -> Out, Values [B, H, W, 2 * heads * d]
//     QV's channels: queries of the horizontal-stripe heads, queries of the vertical-stripe heads,
//     values (also the keys) in the same order, d channels per head; queries already scaled. Out: the
//     horizontal heads' outputs, then the vertical heads'; Values: QV's values, contiguous (the block's
//     local conv reads them; a slice of QV would back-propagate through Paddle's slow slice gradient).
//     Horizontal stripes are ``stripe`` rows tall, vertical ones ``stripe`` columns wide. Float32,
//     contiguous.

#include <algorithm>
#include <atomic>
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

// A failed sgemm's status, reported once the parallel loop has ended (an exception must not leave an OpenMP
// region).
std::atomic<int> sgemm_failure{dnnl_success};

// C [m, n] = op(A) op(B) + beta C, row-major, on the calling thread when called inside a parallel loop.
void sgemm(char trans_a, char trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
           int64_t ldb, float beta, float* c, int64_t ldc) {
  const dnnl_status_t status = dnnl_sgemm(trans_a, trans_b, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
  if (status != dnnl_success) sgemm_failure = status;
}

void check_sgemm() {
  const int status = sgemm_failure.exchange(dnnl_success);
  PD_CHECK(status == dnnl_success, "segkit_stripe_attention: oneDNN's sgemm failed (status ", status, ")");
}

// Softmax(q v^T) of ``t`` tokens [t, d] into ``probs`` [t, t].
void probabilities(const float* q, const float* v, int64_t t, int64_t d, float* probs) {
  sgemm('N', 'T', t, t, d, q, d, v, d, 0.0f, probs, t);
  for (int64_t i = 0; i < t; ++i) softmax_row(probs + i * t, t);
}

// The tasks of one call: every (image, head, stripe) of each direction, and where a task's tokens lie.
struct Tasks {
  int64_t h, w, wide, out_wide, d, heads, stripe, row_stripes, col_stripes, row_tasks, count, most;

  Tasks(const paddle::Tensor& qv, int heads_, int stripe_) : heads(heads_), stripe(stripe_) {
    PD_CHECK(qv.is_cpu() && qv.dtype() == paddle::DataType::FLOAT32 && qv.shape().size() == 4,
             "segkit_stripe_attention: float32 CPU QV [B, H, W, 4 * heads * d]");
    PD_CHECK(heads > 0 && stripe > 0 && qv.shape()[3] % (4 * heads) == 0,
             "segkit_stripe_attention: QV's channels are a multiple of 4 * heads; heads, stripe > 0");
    const int64_t images = qv.shape()[0];
    h = qv.shape()[1];
    w = qv.shape()[2];
    wide = qv.shape()[3];
    out_wide = wide / 2;
    d = wide / (4 * heads);
    row_stripes = (h + stripe - 1) / stripe;
    col_stripes = (w + stripe - 1) / stripe;
    row_tasks = images * heads * row_stripes;
    count = row_tasks + images * heads * col_stripes;
    most = std::max(std::min(stripe, h) * w, std::min(stripe, w) * h);
  }

  // Writes the indices of ``task``'s tokens (in the [B * H * W] token grid) to ``tokens`` and returns how many;
  // ``group`` becomes the task's head among all 2 * heads (horizontal ones first): its query channels
  // start at group * d in QV, its values at (2 * heads + group) * d, its output at group * d in Out.
  int64_t tokens_of(int64_t task, int64_t* tokens, int64_t* group) const {
    const bool rows = task < row_tasks;
    const int64_t k = rows ? task : task - row_tasks, stripes = rows ? row_stripes : col_stripes;
    const int64_t image = k / (heads * stripes), head = k / stripes % heads, first = k % stripes * stripe;
    *group = rows ? head : heads + head;
    const int64_t across = rows ? std::min(stripe, h - first) : h, along = rows ? w : std::min(stripe, w - first);
    for (int64_t i = 0; i < across; ++i) {
      for (int64_t j = 0; j < along; ++j) {
        *tokens++ = rows ? (image * h + first + i) * w + j : (image * h + i) * w + first + j;
      }
    }
    return across * along;
  }
};

// ``d`` channels from ``at`` of each of ``t`` tokens of ``src`` (``wide`` channels per token) into ``dst`` [t, d].
void gather(const float* src, int64_t wide, int64_t at, const int64_t* tokens, int64_t t, int64_t d, float* dst) {
  for (int64_t i = 0; i < t; ++i) std::memcpy(dst + i * d, src + tokens[i] * wide + at, d * sizeof(float));
}

void scatter(const float* src, const int64_t* tokens, int64_t t, int64_t d, float* dst, int64_t wide, int64_t at) {
  for (int64_t i = 0; i < t; ++i) std::memcpy(dst + tokens[i] * wide + at, src + i * d, d * sizeof(float));
}

}  // namespace

std::vector<paddle::Tensor> StripeAttentionForward(const paddle::Tensor& qv, int heads, int stripe) {
  const Tasks tasks(qv, heads, stripe);
  const std::vector<int64_t>& shape = qv.shape();
  const std::vector<int64_t> out_shape = {shape[0], shape[1], shape[2], tasks.out_wide};
  paddle::Tensor out = paddle::empty(out_shape, paddle::DataType::FLOAT32, qv.place());
  paddle::Tensor values = paddle::empty(out_shape, paddle::DataType::FLOAT32, qv.place());
  const float* src = qv.data<float>();
  float *dst = out.data<float>(), *values_dst = values.data<float>();
  const int64_t most = tasks.most, d = tasks.d;
#pragma omp parallel
  {
    std::vector<float> probs(most * most), rows(3 * most * d);  // a task's queries, values, outputs
    std::vector<int64_t> tokens(most);
    float *q = rows.data(), *v = q + most * d, *o = v + most * d;
#pragma omp for schedule(monotonic : dynamic)  // the GOMP 1.0 entry points Intel OpenMP has
    for (int64_t task = 0; task < tasks.count; ++task) {
      int64_t group;
      const int64_t t = tasks.tokens_of(task, tokens.data(), &group);
      gather(src, tasks.wide, group * d, tokens.data(), t, d, q);
      gather(src, tasks.wide, (2 * heads + group) * d, tokens.data(), t, d, v);
      probabilities(q, v, t, d, probs.data());
      sgemm('N', 'N', t, d, t, probs.data(), t, v, d, 0.0f, o, d);
      scatter(o, tokens.data(), t, d, dst, tasks.out_wide, group * d);
      scatter(v, tokens.data(), t, d, values_dst, tasks.out_wide, group * d);
    }
  }
  check_sgemm();
  return {out, values};
}

// With P = softmax(q v^T) recomputed and o = P v: dP = do v^T, dS = P * (dP - rowsum(do * o)), dq = dS v,
// dv = dValues + P^T do + dS^T q (the values are also the keys).
std::vector<paddle::Tensor> StripeAttentionBackward(const paddle::Tensor& qv, const paddle::Tensor& out,
                                                    const paddle::Tensor& out_grad, const paddle::Tensor& values_grad,
                                                    int heads, int stripe) {
  const Tasks tasks(qv, heads, stripe);
  PD_CHECK(out_grad.initialized(), "segkit_stripe_attention: a gradient needs the attention output's gradient");
  paddle::Tensor qv_grad = paddle::empty(qv.shape(), paddle::DataType::FLOAT32, qv.place());
  const float *src = qv.data<float>(), *outs = out.data<float>(), *grads = out_grad.data<float>();
  // Nothing where the values output went unused.
  const float* more_grads = values_grad.initialized() && values_grad.numel() ? values_grad.data<float>() : nullptr;
  float* dst = qv_grad.data<float>();
  const int64_t most = tasks.most, d = tasks.d;
#pragma omp parallel
  {
    std::vector<float> squares(2 * most * most), rows(6 * most * d);
    std::vector<int64_t> tokens(most);
    float *probs = squares.data(), *dlogits = probs + most * most;
    float *q = rows.data(), *v = q + most * d, *o = v + most * d, *dout = o + most * d, *dq = dout + most * d;
    float* dv = dq + most * d;
#pragma omp for schedule(monotonic : dynamic)  // the GOMP 1.0 entry points Intel OpenMP has
    for (int64_t task = 0; task < tasks.count; ++task) {
      int64_t group;
      const int64_t t = tasks.tokens_of(task, tokens.data(), &group);
      const int64_t q_at = group * d, v_at = (2 * heads + group) * d;
      gather(src, tasks.wide, q_at, tokens.data(), t, d, q);
      gather(src, tasks.wide, v_at, tokens.data(), t, d, v);
      gather(outs, tasks.out_wide, group * d, tokens.data(), t, d, o);
      gather(grads, tasks.out_wide, group * d, tokens.data(), t, d, dout);
      probabilities(q, v, t, d, probs);
      sgemm('N', 'T', t, t, d, dout, d, v, d, 0.0f, dlogits, t);
      for (int64_t i = 0; i < t; ++i) {
        float delta = 0.0f;
        for (int64_t e = 0; e < d; ++e) delta += dout[i * d + e] * o[i * d + e];
        float *p = probs + i * t, *g = dlogits + i * t;
        for (int64_t j = 0; j < t; ++j) g[j] = p[j] * (g[j] - delta);
      }
      sgemm('N', 'N', t, d, t, dlogits, t, v, d, 0.0f, dq, d);
      if (more_grads) gather(more_grads, tasks.out_wide, group * d, tokens.data(), t, d, dv);
      sgemm('T', 'N', t, d, t, probs, t, dout, d, more_grads ? 1.0f : 0.0f, dv, d);
      sgemm('T', 'N', t, d, t, dlogits, t, q, d, 1.0f, dv, d);
      scatter(dq, tokens.data(), t, d, dst, tasks.wide, q_at);
      scatter(dv, tokens.data(), t, d, dst, tasks.wide, v_at);
    }
  }
  check_sgemm();
  return {qv_grad};
}

PD_BUILD_OP(segkit_stripe_attention)
    .Inputs({"QV"})
    .Outputs({"Out", "Values"})
    .Attrs({"heads: int", "stripe: int"})
    .SetKernelFn(PD_KERNEL(StripeAttentionForward));

PD_BUILD_GRAD_OP(segkit_stripe_attention)
    .Inputs({"QV", "Out", paddle::Grad("Out"), paddle::Grad("Values")})
    .Outputs({paddle::Grad("QV")})
    .Attrs({"heads: int", "stripe: int"})
    .SetKernelFn(PD_KERNEL(StripeAttentionBackward));
