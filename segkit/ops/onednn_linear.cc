// A linear layer without gradients for Paddle's dygraph on the CPU: one oneDNN matrix product with the
// bias added in its epilogue. Paddle's linear computes the product and then adds the bias in a second,
// single-threaded pass over the output (fc1 of an HRViT block on 1x128x128x32: 3.8 ms, most of it that
// add). Float32, plain layouts; inference only (no gradient operator: segkit calls it where no
// gradient is needed).
//
//   segkit_linear(X [..., K], W [K, N], B [N] or no elements) -> Out [..., N]

#include <string>
#include <unordered_map>
#include <vector>

#include "onednn_common.h"

namespace {

using namespace segkit;  // NOLINT: the shared oneDNN helpers

struct Linear {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul product;

  Linear(int64_t m, int64_t k, int64_t n, bool bias)
      : pd(cpu_engine(), plain_layout({m, k}, Tag::ab), plain_layout({k, n}, Tag::ab),
           bias ? plain_layout({1, n}, Tag::ab) : memory::desc(), plain_layout({m, n}, Tag::ab)),
        product(pd) {}
};

std::vector<paddle::Tensor> LinearForward(const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& b) {
  check_float_cpu(x, "segkit_linear");
  check_float_cpu(w, "segkit_linear");
  const std::vector<int64_t>& shape = x.shape();
  PD_CHECK(!shape.empty() && w.shape().size() == 2 && w.shape()[0] == shape.back(),
           "segkit_linear: X [..., K] and W [K, N]");
  const int64_t k = shape.back(), n = w.shape()[1], m = k ? x.numel() / k : 0;
  const bool has_bias = b.numel() > 0;
  PD_CHECK(!has_bias || b.numel() == n, "segkit_linear: B has N elements");
  static PrimitiveCache<Linear> cache;
  Linear& p = cache.get(dims_key({m, k, n}) + (has_bias ? "b" : "-"),
                        [&] { return new Linear(m, k, n, has_bias); });
  std::vector<int64_t> out_shape = shape;
  out_shape.back() = n;
  paddle::Tensor out = paddle::empty(out_shape, paddle::DataType::FLOAT32, x.place());
  std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, wrap({m, k}, Tag::ab, x)},
                                          {DNNL_ARG_WEIGHTS, wrap({k, n}, Tag::ab, w)},
                                          {DNNL_ARG_DST, wrap({m, n}, Tag::ab, out)}};
  if (has_bias) args[DNNL_ARG_BIAS] = wrap({1, n}, Tag::ab, b);
  p.product.execute(cpu_stream(), args);
  cpu_stream().wait();
  return {out};
}

}  // namespace

PD_BUILD_OP(segkit_linear).Inputs({"X", "W", "B"}).Outputs({"Out"}).SetKernelFn(PD_KERNEL(LinearForward));
