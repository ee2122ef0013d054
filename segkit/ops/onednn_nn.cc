// Softmax, GELU, layer normalisation and the pixel-wise softmax cross-entropy for Paddle's dygraph
// on the CPU, computed by oneDNN. Paddle 3.3 runs its own CPU kernels of these on one thread whatever
// the thread count, and the gradients of softmax and layer norm slowly even there; oneDNN's are
// vectorised and use every thread. Float32, plain (contiguous) layouts.
//
//   segkit_softmax(X) -> Out                       softmax over the last axis
//   segkit_gelu(X) -> Out                          exact (erf) GELU
//   segkit_layer_norm(X, Scale, Shift) -> Out, Mean, Variance
//                                                  over the last axis, with scale and shift
//   segkit_softmax_ce(Logits, Label) -> Loss, LogProb
//                                                  Logits [N, C, ...], Label [N, ...] int64; the loss
//                                                  of a pixel labelled ignore_index is 0 and so is
//                                                  its gradient

#include <cmath>
#include <string>
#include <unordered_map>
#include <vector>

#include "onednn_common.h"

namespace {

using namespace segkit;  // NOLINT: the shared oneDNN helpers

// [rows, columns]: the tensor seen as rows of its last axis.
Dims as_rows(const paddle::Tensor& t) {
  const std::vector<int64_t>& shape = t.shape();
  const int64_t columns = shape.empty() ? 1 : shape.back();
  return {columns ? t.numel() / columns : 0, columns};
}

// ---- softmax over the last axis ------------------------------------------------------------------

// Over axis 1 of plain [rows, columns] (the last axis) or [N, C, P] (the classes) data.
struct Softmax {
  memory::desc data;
  dnnl::softmax_forward::primitive_desc forward_pd;
  dnnl::softmax_forward forward;
  std::unique_ptr<dnnl::softmax_backward> backward;

  Softmax(const Dims& dims, dnnl::algorithm algorithm)
      : data(plain_layout(dims, dims.size() == 2 ? Tag::ab : Tag::abc)),
        forward_pd(cpu_engine(), dnnl::prop_kind::forward_training, algorithm, data, data, 1),
        forward(forward_pd) {}

  dnnl::softmax_backward& backward_primitive() {
    return made_once(backward, [this] {
      return dnnl::softmax_backward::primitive_desc(cpu_engine(), forward_pd.get_algorithm(), data, data, data, 1,
                                                    forward_pd);
    });
  }
};

Softmax& softmax_primitives(const Dims& dims, dnnl::algorithm algorithm) {
  static PrimitiveCache<Softmax> cache;
  return cache.get(dims_key(dims) + std::to_string(static_cast<int>(algorithm)),
                   [&] { return new Softmax(dims, algorithm); });
}

std::vector<paddle::Tensor> SoftmaxForward(const paddle::Tensor& x) {
  check_float_cpu(x, "segkit_softmax");
  const Dims dims = as_rows(x);
  paddle::Tensor out = paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place());
  Softmax& p = softmax_primitives(dims, dnnl::algorithm::softmax_accurate);
  p.forward.execute(cpu_stream(), {{DNNL_ARG_SRC, wrap(dims, Tag::ab, x)}, {DNNL_ARG_DST, wrap(dims, Tag::ab, out)}});
  cpu_stream().wait();
  return {out};
}

std::vector<paddle::Tensor> SoftmaxBackward(const paddle::Tensor& out, const paddle::Tensor& grad_out) {
  const Dims dims = as_rows(out);
  paddle::Tensor grad_x = paddle::empty(out.shape(), paddle::DataType::FLOAT32, out.place());
  Softmax& p = softmax_primitives(dims, dnnl::algorithm::softmax_accurate);
  p.backward_primitive().execute(cpu_stream(), {{DNNL_ARG_DST, wrap(dims, Tag::ab, out)},
                                                {DNNL_ARG_DIFF_DST, wrap(dims, Tag::ab, grad_out)},
                                                {DNNL_ARG_DIFF_SRC, wrap(dims, Tag::ab, grad_x)}});
  cpu_stream().wait();
  return {grad_x};
}

// ---- GELU ----------------------------------------------------------------------------------------

struct Gelu {
  memory::desc data;
  dnnl::eltwise_forward::primitive_desc forward_pd;
  dnnl::eltwise_forward forward;
  std::unique_ptr<dnnl::eltwise_backward> backward;

  explicit Gelu(const Dims& dims)
      : data(plain_layout(dims, Tag::a)),
        forward_pd(cpu_engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::eltwise_gelu_erf, data, data),
        forward(forward_pd) {}

  dnnl::eltwise_backward& backward_primitive() {
    return made_once(backward, [this] {
      return dnnl::eltwise_backward::primitive_desc(cpu_engine(), dnnl::algorithm::eltwise_gelu_erf, data, data, data,
                                                    0.f, 0.f, forward_pd);
    });
  }
};

Gelu& gelu_primitives(const Dims& dims) {
  static PrimitiveCache<Gelu> cache;
  return cache.get(dims_key(dims), [&] { return new Gelu(dims); });
}

std::vector<paddle::Tensor> GeluForward(const paddle::Tensor& x) {
  check_float_cpu(x, "segkit_gelu");
  const Dims dims = {x.numel()};
  paddle::Tensor out = paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place());
  gelu_primitives(dims).forward.execute(
      cpu_stream(), {{DNNL_ARG_SRC, wrap(dims, Tag::a, x)}, {DNNL_ARG_DST, wrap(dims, Tag::a, out)}});
  cpu_stream().wait();
  return {out};
}

std::vector<paddle::Tensor> GeluBackward(const paddle::Tensor& x, const paddle::Tensor& grad_out) {
  const Dims dims = {x.numel()};
  paddle::Tensor grad_x = paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place());
  gelu_primitives(dims).backward_primitive().execute(cpu_stream(), {{DNNL_ARG_SRC, wrap(dims, Tag::a, x)},
                                                                    {DNNL_ARG_DIFF_DST, wrap(dims, Tag::a, grad_out)},
                                                                    {DNNL_ARG_DIFF_SRC, wrap(dims, Tag::a, grad_x)}});
  cpu_stream().wait();
  return {grad_x};
}

// ---- layer normalisation over the last axis ------------------------------------------------------

const dnnl::normalization_flags kScaleShift =
    dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;

struct LayerNorm {
  memory::desc data, stats;
  float epsilon;
  dnnl::layer_normalization_forward::primitive_desc forward_pd;
  dnnl::layer_normalization_forward forward;
  std::unique_ptr<dnnl::layer_normalization_backward> backward;

  LayerNorm(const Dims& dims, float epsilon)
      : data(plain_layout(dims, Tag::ab)),
        stats(plain_layout({dims[0]}, Tag::a)),
        epsilon(epsilon),
        forward_pd(cpu_engine(), dnnl::prop_kind::forward_training, data, data, stats, epsilon, kScaleShift),
        forward(forward_pd) {}

  dnnl::layer_normalization_backward& backward_primitive() {
    return made_once(backward, [this] {
      return dnnl::layer_normalization_backward::primitive_desc(cpu_engine(), dnnl::prop_kind::backward, data, data,
                                                                data, stats, epsilon, kScaleShift, forward_pd);
    });
  }
};

LayerNorm& layer_norm_primitives(const Dims& dims, float epsilon) {
  static PrimitiveCache<LayerNorm> cache;
  return cache.get(dims_key(dims) + std::to_string(epsilon), [&] { return new LayerNorm(dims, epsilon); });
}

std::vector<paddle::Tensor> LayerNormForward(const paddle::Tensor& x, const paddle::Tensor& scale,
                                             const paddle::Tensor& shift, float epsilon) {
  check_float_cpu(x, "segkit_layer_norm");
  check_float_cpu(scale, "segkit_layer_norm");
  check_float_cpu(shift, "segkit_layer_norm");
  const Dims dims = as_rows(x);
  PD_CHECK(scale.numel() == dims[1] && shift.numel() == dims[1], "segkit_layer_norm: one scale and shift per channel");
  paddle::Tensor out = paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place());
  paddle::Tensor mean = paddle::empty({dims[0]}, paddle::DataType::FLOAT32, x.place());
  paddle::Tensor variance = paddle::empty({dims[0]}, paddle::DataType::FLOAT32, x.place());
  layer_norm_primitives(dims, epsilon)
      .forward.execute(cpu_stream(), {{DNNL_ARG_SRC, wrap(dims, Tag::ab, x)},
                                      {DNNL_ARG_DST, wrap(dims, Tag::ab, out)},
                                      {DNNL_ARG_MEAN, wrap({dims[0]}, Tag::a, mean)},
                                      {DNNL_ARG_VARIANCE, wrap({dims[0]}, Tag::a, variance)},
                                      {DNNL_ARG_SCALE, wrap({dims[1]}, Tag::a, scale)},
                                      {DNNL_ARG_SHIFT, wrap({dims[1]}, Tag::a, shift)}});
  cpu_stream().wait();
  return {out, mean, variance};
}

std::vector<paddle::Tensor> LayerNormBackward(const paddle::Tensor& x, const paddle::Tensor& scale,
                                              const paddle::Tensor& shift, const paddle::Tensor& mean,
                                              const paddle::Tensor& variance,
                                              const paddle::Tensor& grad_out, float epsilon) {
  const Dims dims = as_rows(x);
  paddle::Tensor grad_x = paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place());
  paddle::Tensor grad_scale = paddle::empty(scale.shape(), paddle::DataType::FLOAT32, x.place());
  paddle::Tensor grad_shift = paddle::empty(scale.shape(), paddle::DataType::FLOAT32, x.place());
  // oneDNN 3.6 checks that the shift is given to the backward too (when the forward used one), though the
  // gradients do not depend on it
  layer_norm_primitives(dims, epsilon)
      .backward_primitive().execute(cpu_stream(), {{DNNL_ARG_SRC, wrap(dims, Tag::ab, x)},
                                                   {DNNL_ARG_MEAN, wrap({dims[0]}, Tag::a, mean)},
                                                   {DNNL_ARG_VARIANCE, wrap({dims[0]}, Tag::a, variance)},
                                                   {DNNL_ARG_DIFF_DST, wrap(dims, Tag::ab, grad_out)},
                                                   {DNNL_ARG_SCALE, wrap({dims[1]}, Tag::a, scale)},
                                                   {DNNL_ARG_SHIFT, wrap({dims[1]}, Tag::a, shift)},
                                                   {DNNL_ARG_DIFF_SRC, wrap(dims, Tag::ab, grad_x)},
                                                   {DNNL_ARG_DIFF_SCALE, wrap({dims[1]}, Tag::a, grad_scale)},
                                                   {DNNL_ARG_DIFF_SHIFT, wrap({dims[1]}, Tag::a, grad_shift)}});
  cpu_stream().wait();
  return {grad_x, grad_scale, grad_shift};
}

// ---- pixel-wise softmax cross-entropy ------------------------------------------------------------

// Logits [N, C, ...] as oneDNN's [N, C, P] (P pixels per image).
Dims as_pixels(const paddle::Tensor& logits) {
  const std::vector<int64_t>& shape = logits.shape();
  PD_CHECK(shape.size() >= 2, "segkit_softmax_ce: logits [N, C, ...]");
  const int64_t images = shape[0], classes = shape[1];
  return {images, classes, images * classes ? logits.numel() / (images * classes) : 0};
}

// Where a pixel's label may be used: a class, or ignore_index (false); anything else is an error.
bool labelled(int64_t label, int64_t classes, int64_t ignore_index) {
  if (label == ignore_index) return false;
  PD_CHECK(label >= 0 && label < classes, "segkit_softmax_ce: label ", label, " is neither a class in [0, ",
           classes, ") nor ignore_index ", ignore_index);
  return true;
}

std::vector<paddle::Tensor> SoftmaxCeForward(const paddle::Tensor& logits, const paddle::Tensor& label,
                                             int64_t ignore_index) {
  check_float_cpu(logits, "segkit_softmax_ce");
  PD_CHECK(label.is_cpu() && label.dtype() == paddle::DataType::INT64, "segkit_softmax_ce: int64 CPU labels");
  const Dims dims = as_pixels(logits);
  const int64_t images = dims[0], classes = dims[1], pixels = dims[2];
  PD_CHECK(label.numel() == images * pixels, "segkit_softmax_ce: one label per pixel");
  paddle::Tensor log_prob = paddle::empty(logits.shape(), paddle::DataType::FLOAT32, logits.place());
  paddle::Tensor loss = paddle::empty(label.shape(), paddle::DataType::FLOAT32, logits.place());
  softmax_primitives(dims, dnnl::algorithm::softmax_log)
      .forward.execute(cpu_stream(), {{DNNL_ARG_SRC, wrap(dims, Tag::abc, logits)},
                                      {DNNL_ARG_DST, wrap(dims, Tag::abc, log_prob)}});
  cpu_stream().wait();
  const int64_t* labels = label.data<int64_t>();
  const float* lp = log_prob.data<float>();
  float* out = loss.data<float>();
  for (int64_t n = 0; n < images; ++n) {
    for (int64_t p = 0; p < pixels; ++p) {
      const int64_t y = labels[n * pixels + p];
      out[n * pixels + p] = labelled(y, classes, ignore_index) ? -lp[(n * classes + y) * pixels + p] : 0.f;
    }
  }
  return {loss, log_prob};
}

// exp(log_prob) * scale, ``scale`` [N, 1, P] broadcast over the classes: two oneDNN primitives (the
// broadcast as a post-op of the exp runs by oneDNN's reference code, 30x slower).
struct ScaledExp {
  dnnl::eltwise_forward exp;
  dnnl::binary multiply;

  explicit ScaledExp(const Dims& dims)
      : exp(dnnl::eltwise_forward::primitive_desc(cpu_engine(), dnnl::prop_kind::forward_inference,
                                                  dnnl::algorithm::eltwise_exp, plain_layout(dims, Tag::abc),
                                                  plain_layout(dims, Tag::abc))),
        multiply(dnnl::binary::primitive_desc(cpu_engine(), dnnl::algorithm::binary_mul, plain_layout(dims, Tag::abc),
                                              plain_layout({dims[0], 1, dims[2]}, Tag::abc),
                                              plain_layout(dims, Tag::abc))) {}

  void operator()(const memory& log_prob, const memory& scale, const memory& out) {
    exp.execute(cpu_stream(), {{DNNL_ARG_SRC, log_prob}, {DNNL_ARG_DST, out}});
    multiply.execute(cpu_stream(), {{DNNL_ARG_SRC_0, out}, {DNNL_ARG_SRC_1, scale}, {DNNL_ARG_DST, out}});
  }
};

ScaledExp& scaled_exp(const Dims& dims) {
  static PrimitiveCache<ScaledExp> cache;
  return cache.get(dims_key(dims), [&] { return new ScaledExp(dims); });
}

// d loss / d logits = (softmax - one_hot(label)) * grad_loss on labelled pixels, 0 elsewhere.
std::vector<paddle::Tensor> SoftmaxCeBackward(const paddle::Tensor& label, const paddle::Tensor& log_prob,
                                              const paddle::Tensor& grad_loss, int64_t ignore_index) {
  const Dims dims = as_pixels(log_prob);
  const int64_t images = dims[0], classes = dims[1], pixels = dims[2];
  const int64_t* labels = label.data<int64_t>();
  paddle::Tensor scale = paddle::empty({images, 1, pixels}, paddle::DataType::FLOAT32, log_prob.place());
  float* s = scale.data<float>();
  const float* g = grad_loss.data<float>();
  for (int64_t i = 0; i < images * pixels; ++i) s[i] = labels[i] == ignore_index ? 0.f : g[i];
  paddle::Tensor grad = paddle::empty(log_prob.shape(), paddle::DataType::FLOAT32, log_prob.place());
  scaled_exp(dims)(wrap(dims, Tag::abc, log_prob), wrap({images, 1, pixels}, Tag::abc, scale),
                   wrap(dims, Tag::abc, grad));
  cpu_stream().wait();
  float* out = grad.data<float>();
  for (int64_t n = 0; n < images; ++n) {
    for (int64_t p = 0; p < pixels; ++p) {
      const int64_t y = labels[n * pixels + p];
      if (y != ignore_index) out[(n * classes + y) * pixels + p] -= s[n * pixels + p];
    }
  }
  return {grad};
}

}  // namespace

PD_BUILD_OP(segkit_softmax).Inputs({"X"}).Outputs({"Out"}).SetKernelFn(PD_KERNEL(SoftmaxForward));

PD_BUILD_GRAD_OP(segkit_softmax)
    .Inputs({"Out", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .SetKernelFn(PD_KERNEL(SoftmaxBackward));

PD_BUILD_OP(segkit_gelu).Inputs({"X"}).Outputs({"Out"}).SetKernelFn(PD_KERNEL(GeluForward));

PD_BUILD_GRAD_OP(segkit_gelu)
    .Inputs({"X", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .SetKernelFn(PD_KERNEL(GeluBackward));

PD_BUILD_OP(segkit_layer_norm)
    .Inputs({"X", "Scale", "Shift"})
    .Outputs({"Out", "Mean", "Variance"})
    .Attrs({"epsilon: float"})
    .SetKernelFn(PD_KERNEL(LayerNormForward));

PD_BUILD_GRAD_OP(segkit_layer_norm)
    .Inputs({"X", "Scale", "Shift", "Mean", "Variance", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Scale"), paddle::Grad("Shift")})
    .Attrs({"epsilon: float"})
    .SetKernelFn(PD_KERNEL(LayerNormBackward));

PD_BUILD_OP(segkit_softmax_ce)
    .Inputs({"Logits", "Label"})
    .Outputs({"Loss", "LogProb"})
    .Attrs({"ignore_index: int64_t"})
    .SetKernelFn(PD_KERNEL(SoftmaxCeForward));

PD_BUILD_GRAD_OP(segkit_softmax_ce)
    .Inputs({"Label", "LogProb", paddle::Grad("Loss")})
    .Outputs({paddle::Grad("Logits")})
    .Attrs({"ignore_index: int64_t"})
    .SetKernelFn(PD_KERNEL(SoftmaxCeBackward));
