// upfirdn2d in one pass: zero-insertion upsampling, padding (negative = crop), FIR filtering
// and decimation, without materialising the upsampled or padded image. The maths is
// spherehead/ops/upfirdn2d.py's reference (scipy.signal.upfirdn order); the filter arrives
// already oriented (flipped on the host for a true convolution) and scaled by the gain.
//
// Thread i computes output element i of [NC, OH, OW]. Output (oy, ox) covers taps
// (ty, tx) of the filter at positions (oy * down_y - pad_y0 + ty, ox * down_x - pad_x0 + tx)
// of the upsampled image; a position contributes when it falls on an original pixel (a
// multiple of up) inside the image. Accumulation is in float32 for every input dtype.
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

namespace {

template <typename scalar_t>
__global__ void upfirdn2d_kernel(const scalar_t* __restrict__ x, const float* __restrict__ f,
                                 scalar_t* __restrict__ y, int64_t total, int H, int W, int OH, int OW,
                                 int fh, int fw, int upx, int upy, int downx, int downy, int px0, int py0) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int ox = static_cast<int>(i % OW);
  const int oy = static_cast<int>((i / OW) % OH);
  const int64_t plane = i / (static_cast<int64_t>(OW) * OH);
  const scalar_t* xp = x + plane * static_cast<int64_t>(H) * W;
  const int uy0 = oy * downy - py0;   // upsampled-image row under filter row 0
  const int ux0 = ox * downx - px0;
  const int UH = H * upy, UW = W * upx;
  float acc = 0.0f;
  for (int ty = 0; ty < fh; ++ty) {
    const int uy = uy0 + ty;
    if (uy < 0 || uy >= UH || uy % upy != 0) continue;
    const int iy = uy / upy;
    const float* frow = f + ty * fw;
    for (int tx = 0; tx < fw; ++tx) {
      const int ux = ux0 + tx;
      if (ux < 0 || ux >= UW || ux % upx != 0) continue;
      acc += static_cast<float>(xp[static_cast<int64_t>(iy) * W + ux / upx]) * __ldg(frow + tx);
    }
  }
  y[i] = static_cast<scalar_t>(acc);
}

}  // namespace

// x [NC, H, W] contiguous; f [fh, fw] float32 contiguous (oriented, gain applied).
// Returns [NC, OH, OW] with OH = (H * upy + py0 + py1 - fh) / downy + 1 (likewise OW).
torch::Tensor upfirdn2d_forward(torch::Tensor x, torch::Tensor f, int upx, int upy, int downx, int downy,
                                int px0, int px1, int py0, int py1) {
  TORCH_CHECK(x.is_cuda() && f.is_cuda(), "upfirdn2d: tensors must be on CUDA");
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous(), "upfirdn2d: x must be a contiguous [NC, H, W] tensor");
  TORCH_CHECK(f.dim() == 2 && f.scalar_type() == torch::kFloat32 && f.is_contiguous(),
              "upfirdn2d: f must be a contiguous float32 [fh, fw] filter");
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: factors must be >= 1");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t NC = x.size(0);
  const int H = static_cast<int>(x.size(1)), W = static_cast<int>(x.size(2));
  const int fh = static_cast<int>(f.size(0)), fw = static_cast<int>(f.size(1));
  const int OH = (H * upy + py0 + py1 - fh) / downy + 1;
  const int OW = (W * upx + px0 + px1 - fw) / downx + 1;
  TORCH_CHECK(OH >= 1 && OW >= 1, "upfirdn2d: the padded, upsampled image is smaller than the filter");
  auto y = torch::empty({NC, OH, OW}, x.options());
  const int64_t total = NC * OH * OW;
  if (total == 0) return y;
  const int threads = 256;
  const int64_t blocks = (total + threads - 1) / threads;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "upfirdn2d", [&] {
    upfirdn2d_kernel<scalar_t><<<blocks, threads, 0, stream>>>(
        x.data_ptr<scalar_t>(), f.data_ptr<float>(), y.data_ptr<scalar_t>(), total, H, W, OH, OW, fh, fw,
        upx, upy, downx, downy, px0, py0);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &upfirdn2d_forward, "upfirdn2d forward (CUDA)");
}
