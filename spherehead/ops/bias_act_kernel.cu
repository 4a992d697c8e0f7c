// Bias + piecewise-linear activation (linear, relu, lrelu) + gain + clamp in one pass, and
// its gradient in one pass. The maths is spherehead/ops/bias_act.py's reference: add the
// bias, activate, multiply by the gain, clamp to [-clamp, clamp] (clamp < 0 = no clamp).
//
// For these activations the derivative is a function of the output alone:
// dy/dx = gain * slope(y) where slope is 1 above zero and alpha (lrelu) or 0 (relu) below,
// and 0 where the clamp cut the value off. So the backward reads y, not x, and the
// gradient's own derivative w.r.t. y is zero (what makes second-order gradients cheap).
// Accumulation is in float32 for half types.
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

namespace {

enum Act { kLinear = 0, kRelu = 1, kLrelu = 2 };

template <typename scalar_t>
__global__ void bias_act_forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ b,
                                        scalar_t* __restrict__ y, int64_t total, int64_t inner, int64_t channels,
                                        int act, float alpha, float gain, float clamp) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  float v = static_cast<float>(x[i]);
  if (b != nullptr) v += static_cast<float>(b[(i / inner) % channels]);
  if (act == kRelu) v = v > 0.0f ? v : 0.0f;
  if (act == kLrelu) v = v > 0.0f ? v : v * alpha;
  v *= gain;
  if (clamp >= 0.0f) v = fminf(fmaxf(v, -clamp), clamp);
  y[i] = static_cast<scalar_t>(v);
}

template <typename scalar_t>
__global__ void bias_act_grad_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ y,
                                     scalar_t* __restrict__ dx, int64_t total, int act, float alpha, float gain,
                                     float clamp) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const float yi = static_cast<float>(y[i]);
  // The clamp as stored in y's dtype: a clamped half value equals the rounded clamp, not the clamp.
  const float limit = static_cast<float>(static_cast<scalar_t>(clamp));
  float k = gain;
  if (act == kRelu && !(yi > 0.0f)) k = 0.0f;
  if (act == kLrelu && !(yi > 0.0f)) k = gain * alpha;
  if (clamp >= 0.0f && !(fabsf(yi) < limit)) k = 0.0f;
  dx[i] = static_cast<scalar_t>(static_cast<float>(dy[i]) * k);
}

int64_t blocks_for(int64_t total, int threads) { return (total + threads - 1) / threads; }

}  // namespace

// x contiguous, any shape; b [channels] or empty; channel of element i = (i / inner) % channels.
torch::Tensor bias_act_forward(torch::Tensor x, torch::Tensor b, int64_t inner, int act, double alpha, double gain,
                               double clamp) {
  TORCH_CHECK(x.is_cuda() && x.is_contiguous(), "bias_act: x must be a contiguous CUDA tensor");
  TORCH_CHECK(b.numel() == 0 || (b.is_cuda() && b.is_contiguous() && b.scalar_type() == x.scalar_type()),
              "bias_act: b must be a contiguous CUDA tensor of x's dtype");
  const c10::cuda::CUDAGuard guard(x.device());
  auto y = torch::empty_like(x);
  const int64_t total = x.numel();
  if (total == 0) return y;
  const int threads = 256;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "bias_act", [&] {
    bias_act_forward_kernel<scalar_t><<<blocks_for(total, threads), threads, 0, stream>>>(
        x.data_ptr<scalar_t>(), b.numel() ? b.data_ptr<scalar_t>() : nullptr, y.data_ptr<scalar_t>(), total,
        inner, b.numel() ? b.numel() : 1, act, static_cast<float>(alpha), static_cast<float>(gain),
        static_cast<float>(clamp));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

// dx = dy * slope(y) (see the header); dy and y contiguous, same shape and dtype.
torch::Tensor bias_act_grad(torch::Tensor dy, torch::Tensor y, int act, double alpha, double gain, double clamp) {
  TORCH_CHECK(dy.is_cuda() && y.is_cuda() && dy.is_contiguous() && y.is_contiguous() && dy.sizes() == y.sizes() &&
              dy.scalar_type() == y.scalar_type(), "bias_act_grad: dy and y must be contiguous CUDA tensors alike");
  const c10::cuda::CUDAGuard guard(y.device());
  auto dx = torch::empty_like(y);
  const int64_t total = y.numel();
  if (total == 0) return dx;
  const int threads = 256;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, y.scalar_type(), "bias_act_grad", [&] {
    bias_act_grad_kernel<scalar_t><<<blocks_for(total, threads), threads, 0, stream>>>(
        dy.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), total, act,
        static_cast<float>(alpha), static_cast<float>(gain), static_cast<float>(clamp));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return dx;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &bias_act_forward, "bias + activation + gain + clamp (CUDA)");
  m.def("grad", &bias_act_grad, "gradient of bias_act from its output (CUDA)");
}
