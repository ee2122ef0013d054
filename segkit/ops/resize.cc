// segkit's bilinear resize for Paddle's dygraph on the CPU: two passes of two taps each, over every
// image plane in parallel (OpenMP), forward and gradient. Paddle 3.3's CPU bilinear kernel and its
// backward run on one thread; as matrix products with the interpolation weights (segkit's earlier
// way) a 4x upsampling costs 128 multiply-adds per output where two passes cost four.
//
//   segkit_resize_bilinear(X, Rows, Cols) -> Out
//     X [N, C, H, W] float32; Rows [OH, 3] and Cols [OW, 3] float32 tables, one line per output row
//     or column: (low source index, high source index, weight of the high one), as Paddle's kernel
//     computes them (``segkit.models.layers._bilinear_taps``). Out [N, C, OH, OW].

#include <algorithm>
#include <cstdint>
#include <vector>

#include "paddle/extension.h"

namespace {

struct Taps {
  std::vector<int64_t> low, high;
  std::vector<float> weight;  // of ``high``; ``low`` has 1 - weight

  explicit Taps(const paddle::Tensor& table) {
    const float* t = table.data<float>();
    const int64_t n = table.shape()[0];
    for (int64_t i = 0; i < n; ++i) {
      low.push_back(static_cast<int64_t>(t[3 * i]));
      high.push_back(static_cast<int64_t>(t[3 * i + 1]));
      weight.push_back(t[3 * i + 2]);
    }
  }

  int64_t size() const { return static_cast<int64_t>(low.size()); }
};

void check_tables(const paddle::Tensor& x, const paddle::Tensor& rows, const paddle::Tensor& cols) {
  PD_CHECK(x.is_cpu() && x.dtype() == paddle::DataType::FLOAT32 && x.shape().size() == 4,
           "segkit_resize_bilinear: float32 NCHW CPU input");
  for (const paddle::Tensor* t : {&rows, &cols}) {
    PD_CHECK(t->dtype() == paddle::DataType::FLOAT32 && t->shape().size() == 2 && t->shape()[1] == 3,
             "segkit_resize_bilinear: tap tables [size, 3]");
  }
}

}  // namespace

std::vector<paddle::Tensor> ResizeForward(const paddle::Tensor& x, const paddle::Tensor& rows,
                                          const paddle::Tensor& cols) {
  check_tables(x, rows, cols);
  const Taps r(rows), c(cols);
  const std::vector<int64_t>& s = x.shape();
  const int64_t planes = s[0] * s[1], h = s[2], w = s[3], oh = r.size(), ow = c.size();
  paddle::Tensor out = paddle::empty({s[0], s[1], oh, ow}, paddle::DataType::FLOAT32, x.place());
  const float* src = x.data<float>();
  float* dst = out.data<float>();
#pragma omp parallel
  {
    std::vector<float> wide(h * ow);  // the plane resized along its rows
#pragma omp for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      const float* in = src + p * h * w;
      for (int64_t k = 0; k < h; ++k) {
        const float* line = in + k * w;
        for (int64_t j = 0; j < ow; ++j) {
          wide[k * ow + j] = (1.f - c.weight[j]) * line[c.low[j]] + c.weight[j] * line[c.high[j]];
        }
      }
      float* plane = dst + p * oh * ow;
      for (int64_t i = 0; i < oh; ++i) {
        const float *a = &wide[r.low[i] * ow], *b = &wide[r.high[i] * ow];
        const float wb = r.weight[i], wa = 1.f - wb;
        for (int64_t j = 0; j < ow; ++j) plane[i * ow + j] = wa * a[j] + wb * b[j];
      }
    }
  }
  return {out};
}

std::vector<paddle::Tensor> ResizeBackward(const paddle::Tensor& x, const paddle::Tensor& rows,
                                           const paddle::Tensor& cols, const paddle::Tensor& grad_out) {
  const Taps r(rows), c(cols);
  const std::vector<int64_t>& s = x.shape();
  const int64_t planes = s[0] * s[1], h = s[2], w = s[3], oh = r.size(), ow = c.size();
  paddle::Tensor grad_x = paddle::empty(s, paddle::DataType::FLOAT32, x.place());
  const float* grad = grad_out.data<float>();
  float* gx = grad_x.data<float>();
#pragma omp parallel
  {
    std::vector<float> wide(h * ow);  // d loss / d (the plane resized along its rows)
#pragma omp for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      std::fill(wide.begin(), wide.end(), 0.f);
      const float* g = grad + p * oh * ow;
      for (int64_t i = 0; i < oh; ++i) {
        float *a = &wide[r.low[i] * ow], *b = &wide[r.high[i] * ow];
        const float wb = r.weight[i], wa = 1.f - wb;
        for (int64_t j = 0; j < ow; ++j) a[j] += wa * g[i * ow + j];
        for (int64_t j = 0; j < ow; ++j) b[j] += wb * g[i * ow + j];
      }
      float* plane = gx + p * h * w;
      std::fill(plane, plane + h * w, 0.f);
      for (int64_t k = 0; k < h; ++k) {
        float* line = plane + k * w;
        for (int64_t j = 0; j < ow; ++j) {
          line[c.low[j]] += (1.f - c.weight[j]) * wide[k * ow + j];
          line[c.high[j]] += c.weight[j] * wide[k * ow + j];
        }
      }
    }
  }
  return {grad_x};
}

PD_BUILD_OP(segkit_resize_bilinear)
    .Inputs({"X", "Rows", "Cols"})
    .Outputs({"Out"})
    .SetKernelFn(PD_KERNEL(ResizeForward));

PD_BUILD_GRAD_OP(segkit_resize_bilinear)
    .Inputs({"X", "Rows", "Cols", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .SetKernelFn(PD_KERNEL(ResizeBackward));
