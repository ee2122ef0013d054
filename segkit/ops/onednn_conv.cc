// segkit's 2-D convolution for Paddle's dygraph on the CPU, computed by oneDNN (the library Paddle
// itself ships in paddle/libs and uses for its inference programs, but not in dygraph).
//
// Operator segkit_conv2d(X, W, B) -> Out, float32 NCHW, or NHWC with ``channels_last``, with a gradient
// operator. Weights are Paddle's [O, I / groups, KH, KW] in both; B is the bias, or a tensor of zero
// elements for none. Padding is symmetric. Primitives are created once per geometry and kept. On NCHW data
// oneDNN chooses its own memory layouts and the data is reordered into them and back; NHWC data is used
// as it is (oneDNN's depth-wise kernels run on it directly, so a depth-wise convolution costs no reorders,
// which on NCHW took twice the convolution's own time).

#include <algorithm>
#include <numeric>
#include <string>
#include <unordered_map>
#include <vector>

#include "onednn_common.h"

namespace {

using namespace segkit;  // NOLINT: the shared oneDNN helpers

// The shapes of one convolution in oneDNN's terms, and a key naming them.
//
// A depth-wise 1xK convolution is given to oneDNN as the Kx1 convolution of the transposed map (H and
// W swapped in every shape, the data described with the strides of Paddle's layout, so the reorder
// into oneDNN's layout transposes for free): oneDNN 3.6 has its fast depth-wise kernels for Kx1 in
// all three directions, but computes 1x21 forward and 1xK weight gradients by im2col and GEMM.
struct Geometry {
  Dims src, weights, bias, dst, strides, dilates, padding;
  Dims out_shape;  // Paddle's [N, O, OH, OW], or [N, OH, OW, O] on NHWC data
  Tag weights_tag, data_tag;
  bool has_bias, depthwise, channels_last;
  std::string key;

  Geometry(const std::vector<int64_t>& shape, const std::vector<int64_t>& w, int64_t bias_size, const Ints& stride,
           const Ints& pad, const Ints& dilation, int groups, bool channels_last)
      : channels_last(channels_last) {
    // x: [N, C, H, W] whatever the layout
    const std::vector<int64_t> x = channels_last ? std::vector<int64_t>{shape[0], shape[3], shape[1], shape[2]} : shape;
    const int64_t out_h = (x[2] + 2 * pad[0] - dilation[0] * (w[2] - 1) - 1) / stride[0] + 1;
    const int64_t out_w = (x[3] + 2 * pad[1] - dilation[1] * (w[3] - 1) - 1) / stride[1] + 1;
    depthwise = groups > 1 && groups == x[1] && groups == w[0];
    const bool transposed = !channels_last && depthwise && w[2] == 1 && w[3] > 1;
    const int h = transposed ? 1 : 0, v = 1 - h;  // the axes oneDNN sees as height and width
    data_tag = channels_last ? Tag::nhwc : transposed ? Tag::abdc : Tag::nchw;
    src = {x[0], x[1], x[2 + h], x[2 + v]};
    dst = {x[0], w[0], h ? out_w : out_h, h ? out_h : out_w};
    out_shape = channels_last ? Dims{x[0], out_h, out_w, w[0]} : Dims{x[0], w[0], out_h, out_w};
    has_bias = bias_size > 0;
    bias = {w[0]};
    if (groups == 1) {
      weights = {w[0], w[1], w[2], w[3]};
      weights_tag = Tag::oihw;
    } else {  // Paddle's [O, I / G, KH, KW] buffer, read as goihw (with KH and KW swapped when transposed:
              // one of them is 1, so the strides are the same)
      weights = {groups, w[0] / groups, w[1], w[2 + h], w[2 + v]};
      weights_tag = Tag::goihw;
    }
    strides = {stride[h], stride[v]};
    dilates = {dilation[h] - 1, dilation[v] - 1};  // oneDNN counts the gaps
    padding = {pad[h], pad[v]};
    for (const Dims& part : {src, weights, strides, dilates, padding}) key += dims_key(part);
    key += has_bias ? "b" : "-";
    key += transposed ? "t" : "";
    key += channels_last ? "c" : "";
  }

  memory::desc bias_desc() const { return has_bias ? plain_layout(bias, Tag::x) : memory::desc(); }
  // The layout the primitives are asked for: oneDNN's choice on NCHW data, the data's own on NHWC.
  memory::desc data_desc(const Dims& dims) const {
    return channels_last ? plain_layout(dims, data_tag) : any_layout(dims);
  }
};

// The primitives of one geometry: the forward at once, the two backward ones when first needed.
struct Primitives {
  dnnl::convolution_forward::primitive_desc forward_pd;
  dnnl::convolution_forward forward;
  std::unique_ptr<dnnl::convolution_backward_data::primitive_desc> data_pd;
  std::unique_ptr<dnnl::convolution_backward_data> data;
  std::unique_ptr<dnnl::convolution_backward_weights::primitive_desc> weights_pd;
  std::unique_ptr<dnnl::convolution_backward_weights> weights;
  bool direct_weights = false;  // depth-wise weight gradients by segkit's loops, not oneDNN's

  explicit Primitives(const Geometry& g)
      : forward_pd(cpu_engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
                   g.data_desc(g.src), any_layout(g.weights), g.bias_desc(), g.data_desc(g.dst), g.strides,
                   g.dilates, g.padding, g.padding),
        forward(forward_pd) {}

  void make_backward(const Geometry& g) {
    if (data) return;
    data_pd.reset(new dnnl::convolution_backward_data::primitive_desc(
        cpu_engine(), dnnl::algorithm::convolution_direct, g.data_desc(g.src), any_layout(g.weights),
        g.data_desc(g.dst), g.strides, g.dilates, g.padding, g.padding, forward_pd));
    data.reset(new dnnl::convolution_backward_data(*data_pd));
    weights_pd.reset(new dnnl::convolution_backward_weights::primitive_desc(
        cpu_engine(), dnnl::algorithm::convolution_direct, g.data_desc(g.src), any_layout(g.weights),
        g.bias_desc(), g.data_desc(g.dst), g.strides, g.dilates, g.padding, g.padding, forward_pd));
    // oneDNN 3.6 computes depth-wise weight gradients above 3x3 by im2col + GEMM on NCHW data, and on NHWC
    // data by a dense kernel over 16x16 channel blocks (5x5 on 1x128x128x64: 13 ms against 0.44 ms for 3x3 by
    // its depth-wise kernel): segkit's loops compute those.
    const std::string impl = weights_pd->impl_info_str();
    direct_weights = g.depthwise && (g.channels_last ? impl.find("_dw") == std::string::npos
                                                     : impl.find("gemm") != std::string::npos);
    if (!direct_weights) weights.reset(new dnnl::convolution_backward_weights(*weights_pd));
  }
};

Primitives& primitives(const Geometry& g, bool backward) {
  static PrimitiveCache<Primitives> cache;
  Primitives& p = cache.get(g.key, [&g] { return new Primitives(g); });
  if (backward) p.make_backward(g);
  return p;
}

void check_inputs(const paddle::Tensor& x, const paddle::Tensor& w, int groups, bool channels_last) {
  check_float_cpu(x, "segkit_conv2d");
  check_float_cpu(w, "segkit_conv2d");
  PD_CHECK(x.shape().size() == 4 && w.shape().size() == 4, "segkit_conv2d: NCHW or NHWC input and OIHW weights");
  PD_CHECK(x.shape()[channels_last ? 3 : 1] == w.shape()[1] * groups && w.shape()[0] % groups == 0,
           "segkit_conv2d: the input's channels do not match the weights and groups");
}

}  // namespace

std::vector<paddle::Tensor> ConvForward(const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& b,
                                        const Ints& strides, const Ints& paddings, const Ints& dilations,
                                        int groups, bool channels_last) {
  check_inputs(x, w, groups, channels_last);
  const Geometry g(x.shape(), w.shape(), b.numel(), strides, paddings, dilations, groups, channels_last);
  Primitives& p = primitives(g, false);
  paddle::Tensor out = paddle::empty(g.out_shape, paddle::DataType::FLOAT32, x.place());
  memory user_dst = wrap(g.dst, g.data_tag, out);
  memory dst = output_for(p.forward_pd.dst_desc(), user_dst);
  std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC, as_layout(p.forward_pd.src_desc(), wrap(g.src, g.data_tag, x))},
      {DNNL_ARG_WEIGHTS, as_layout(p.forward_pd.weights_desc(), wrap(g.weights, g.weights_tag, w))},
      {DNNL_ARG_DST, dst}};
  if (g.has_bias) args[DNNL_ARG_BIAS] = wrap(g.bias, Tag::x, b);
  p.forward.execute(cpu_stream(), args);
  copy_back(dst, user_dst);
  cpu_stream().wait();
  return {out};
}

// d loss / d weights (and bias) of a depth-wise convolution, channel by channel from Paddle's NCHW buffers:
// for every tap, the sum over images and output pixels of the output gradient times the input pixel the
// tap reads. oneDNN 3.6 computes these by im2col and GEMM for kernels larger than 3x3 (a 7x7 on
// 64x128x128: 93 ms, its data gradient 5 ms). ``acc`` holds one partial sum per output column, so the
// innermost loop has no reduction and vectorises.
void depthwise_weight_grad(const paddle::Tensor& x, const paddle::Tensor& grad_out, const Ints& stride, const Ints& pad,
                           const Ints& dilation, paddle::Tensor* grad_w, paddle::Tensor* grad_b) {
  const std::vector<int64_t>&xs = x.shape(), &os = grad_out.shape(), &ws = grad_w->shape();
  const int64_t images = xs[0], channels = xs[1], h = xs[2], w = xs[3], oh = os[2], ow = os[3];
  const int64_t kh = ws[2], kw = ws[3], padded_w = w + 2 * pad[1];
  const float* input = x.data<float>();
  const float* grad = grad_out.data<float>();
  float* gw = grad_w->data<float>();
  float* gb = grad_b ? grad_b->data<float>() : nullptr;
#pragma omp parallel
  {
    std::vector<float> plane((h + 2 * pad[0]) * padded_w, 0.f), acc(ow);  // borders stay zero
#pragma omp for schedule(static)
    for (int64_t c = 0; c < channels; ++c) {
      std::fill(gw + c * kh * kw, gw + (c + 1) * kh * kw, 0.f);
      double bias = 0;
      for (int64_t n = 0; n < images; ++n) {
        const float* src = input + (n * channels + c) * h * w;
        const float* g = grad + (n * channels + c) * oh * ow;
        for (int64_t r = 0; r < h; ++r) {
          std::copy(src + r * w, src + (r + 1) * w, &plane[(r + pad[0]) * padded_w + pad[1]]);
        }
        for (int64_t i = 0; i < kh; ++i) {
          for (int64_t j = 0; j < kw; ++j) {
            std::fill(acc.begin(), acc.end(), 0.f);
            for (int64_t r = 0; r < oh; ++r) {
              const float* row = &plane[(r * stride[0] + i * dilation[0]) * padded_w + j * dilation[1]];
              const float* g_row = g + r * ow;
              if (stride[1] == 1) {
                for (int64_t q = 0; q < ow; ++q) acc[q] += g_row[q] * row[q];
              } else {
                for (int64_t q = 0; q < ow; ++q) acc[q] += g_row[q] * row[q * stride[1]];
              }
            }
            gw[(c * kh + i) * kw + j] += std::accumulate(acc.begin(), acc.end(), 0.f);
          }
        }
        if (gb) bias = std::accumulate(g, g + oh * ow, bias);
      }
      if (gb) gb[c] = static_cast<float>(bias);
    }
  }
}

// The same on NHWC buffers: channels are contiguous, so the loops run over output pixels and taps and the
// innermost loop over channels vectorises; each thread sums one output row at a time in float and adds
// it into its double totals, which are added together at the end.
void depthwise_weight_grad_nhwc(const paddle::Tensor& x, const paddle::Tensor& grad_out, const Ints& stride,
                                const Ints& pad, const Ints& dilation, paddle::Tensor* grad_w, paddle::Tensor* grad_b) {
  const std::vector<int64_t>&xs = x.shape(), &os = grad_out.shape(), &ws = grad_w->shape();
  const int64_t h = xs[1], w = xs[2], channels = xs[3], rows = os[0] * os[1], oh = os[1], ow = os[2];
  const int64_t kh = ws[2], kw = ws[3], slots = (kh * kw + 1) * channels;  // per tap and channel, then the bias
  const float* input = x.data<float>();
  const float* grad = grad_out.data<float>();
  std::vector<double> total(slots, 0.0);
#pragma omp parallel
  {
    std::vector<float> row_sum(slots);
    std::vector<double> sum(slots, 0.0);
#pragma omp for schedule(static)
    for (int64_t nr = 0; nr < rows; ++nr) {
      const int64_t n = nr / oh, r = nr % oh;
      std::fill(row_sum.begin(), row_sum.end(), 0.f);
      float* bias = &row_sum[kh * kw * channels];
      for (int64_t q = 0; q < ow; ++q) {
        const float* g = grad + (nr * ow + q) * channels;
        for (int64_t c = 0; c < channels; ++c) bias[c] += g[c];
        for (int64_t i = 0; i < kh; ++i) {
          const int64_t y = r * stride[0] + i * dilation[0] - pad[0];
          if (y < 0 || y >= h) continue;
          for (int64_t j = 0; j < kw; ++j) {
            const int64_t z = q * stride[1] + j * dilation[1] - pad[1];
            if (z < 0 || z >= w) continue;
            const float* src = input + ((n * h + y) * w + z) * channels;
            float* acc = &row_sum[(i * kw + j) * channels];
            for (int64_t c = 0; c < channels; ++c) acc[c] += g[c] * src[c];
          }
        }
      }
      for (int64_t k = 0; k < slots; ++k) sum[k] += row_sum[k];
    }
#pragma omp critical
    for (int64_t k = 0; k < slots; ++k) total[k] += sum[k];
  }
  float* gw = grad_w->data<float>();  // [C, 1, KH, KW]
  for (int64_t t = 0; t < kh * kw; ++t) {
    for (int64_t c = 0; c < channels; ++c) gw[c * kh * kw + t] = static_cast<float>(total[t * channels + c]);
  }
  if (grad_b) {
    float* gb = grad_b->data<float>();
    for (int64_t c = 0; c < channels; ++c) gb[c] = static_cast<float>(total[kh * kw * channels + c]);
  }
}

std::vector<paddle::Tensor> ConvBackward(const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& b,
                                         const paddle::Tensor& grad_out, const Ints& strides, const Ints& paddings,
                                         const Ints& dilations, int groups, bool channels_last) {
  const Geometry g(x.shape(), w.shape(), b.numel(), strides, paddings, dilations, groups, channels_last);
  Primitives& p = primitives(g, true);
  paddle::Tensor grad_x = paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place());
  paddle::Tensor grad_w = paddle::empty(w.shape(), paddle::DataType::FLOAT32, x.place());
  paddle::Tensor grad_b = paddle::empty(b.shape(), paddle::DataType::FLOAT32, x.place());
  const memory user_grad_out = wrap(g.dst, g.data_tag, grad_out);

  memory user_grad_x = wrap(g.src, g.data_tag, grad_x);
  memory grad_src = output_for(p.data_pd->diff_src_desc(), user_grad_x);
  const memory grad_dst = as_layout(p.data_pd->diff_dst_desc(), user_grad_out);
  p.data->execute(cpu_stream(),
                  {{DNNL_ARG_DIFF_DST, grad_dst},
                   {DNNL_ARG_WEIGHTS, as_layout(p.data_pd->weights_desc(), wrap(g.weights, g.weights_tag, w))},
                   {DNNL_ARG_DIFF_SRC, grad_src}});
  copy_back(grad_src, user_grad_x);

  if (p.direct_weights) {
    cpu_stream().wait();
    (channels_last ? depthwise_weight_grad_nhwc : depthwise_weight_grad)(x, grad_out, strides, paddings, dilations,
                                                                         &grad_w, g.has_bias ? &grad_b : nullptr);
    return {grad_x, grad_w, grad_b};
  }
  memory user_grad_w = wrap(g.weights, g.weights_tag, grad_w);
  memory grad_weights = output_for(p.weights_pd->diff_weights_desc(), user_grad_w);
  std::unordered_map<int, memory> args = {
      // the output gradient is reordered once when both primitives want the same layout (the usual case)
      {DNNL_ARG_DIFF_DST, p.weights_pd->diff_dst_desc() == grad_dst.get_desc()
                              ? grad_dst : as_layout(p.weights_pd->diff_dst_desc(), user_grad_out)},
      {DNNL_ARG_SRC, as_layout(p.weights_pd->src_desc(), wrap(g.src, g.data_tag, x))},
      {DNNL_ARG_DIFF_WEIGHTS, grad_weights}};
  if (g.has_bias) args[DNNL_ARG_DIFF_BIAS] = wrap(g.bias, Tag::x, grad_b);
  p.weights->execute(cpu_stream(), args);
  copy_back(grad_weights, user_grad_w);
  cpu_stream().wait();
  return {grad_x, grad_w, grad_b};
}

PD_BUILD_OP(segkit_conv2d)
    .Inputs({"X", "W", "B"})
    .Outputs({"Out"})
    .Attrs({"strides: std::vector<int>", "paddings: std::vector<int>", "dilations: std::vector<int>", "groups: int",
            "channels_last: bool"})
    .SetKernelFn(PD_KERNEL(ConvForward));

PD_BUILD_GRAD_OP(segkit_conv2d)
    .Inputs({"X", "W", "B", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W"), paddle::Grad("B")})
    .Attrs({"strides: std::vector<int>", "paddings: std::vector<int>", "dilations: std::vector<int>", "groups: int",
            "channels_last: bool"})
    .SetKernelFn(PD_KERNEL(ConvBackward));
