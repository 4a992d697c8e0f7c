// upfirdn2d in one pass: zero-insertion upsampling, padding (negative = crop), FIR filtering
// and decimation, without materialising the upsampled or padded image. The maths is
// spherehead/ops/upfirdn2d.py's reference (scipy.signal.upfirdn order); the filter arrives
// already oriented (flipped on the host for a true convolution) and scaled by the gain.
//
// Output (oy, ox) covers taps (ty, tx) of the filter at positions
// (oy * down_y - pad_y0 + ty, ox * down_x - pad_x0 + tx) of the upsampled image; a position
// contributes when it falls on an original pixel (a multiple of up) inside the image.
// Accumulation is in float32 for every input dtype.
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

#include <algorithm>

namespace {

constexpr int kTileW = 32;  // outputs per block along x (one warp)
constexpr int kTileH = 8;   // outputs per block along y

__host__ __device__ __forceinline__ int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
__host__ __device__ __forceinline__ int ceil_div(int a, int b) { return -floor_div(-a, b); }
__device__ __forceinline__ int pos_mod(int a, int b) { return ((a % b) + b) % b; }

// One block computes a kTileH x kTileW tile of outputs of one image plane. It first copies the
// input pixels under the tile's footprint (zeros outside the image) into shared memory, then each
// thread sums only the taps that land on original pixels (every up-th tap: the others multiply
// inserted zeros), reading shared memory.
template <typename scalar_t>
__global__ void upfirdn2d_kernel(const scalar_t* __restrict__ x, const float* __restrict__ f,
                                 scalar_t* __restrict__ y, int64_t planes, int H, int W, int OH, int OW,
                                 int fh, int fw, int upx, int upy, int downx, int downy, int px0, int py0,
                                 int tile_in_w, int tile_in_h) {
  extern __shared__ float tile[];
  const int ox = blockIdx.x * kTileW + threadIdx.x;
  const int oy = blockIdx.y * kTileH + threadIdx.y;
  // Input pixel at the tile's top-left corner: the first whose upsampled position is inside
  // the footprint of the tile's first output.
  const int ix_lo = ceil_div(static_cast<int>(blockIdx.x) * kTileW * downx - px0, upx);
  const int iy_lo = ceil_div(static_cast<int>(blockIdx.y) * kTileH * downy - py0, upy);
  const int ux0 = ox * downx - px0, uy0 = oy * downy - py0;
  const int tid = threadIdx.y * kTileW + threadIdx.x;
  for (int64_t plane = blockIdx.z; plane < planes; plane += gridDim.z) {
    const scalar_t* xp = x + plane * static_cast<int64_t>(H) * W;
    __syncthreads();   // the previous plane's reads are done
    for (int k = tid; k < tile_in_w * tile_in_h; k += kTileW * kTileH) {
      const int iy = iy_lo + k / tile_in_w, ix = ix_lo + k % tile_in_w;
      tile[k] = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? static_cast<float>(xp[static_cast<int64_t>(iy) * W + ix])
                                                         : 0.0f;
    }
    __syncthreads();
    if (ox < OW && oy < OH) {
      // The first tap on an original pixel, and that pixel's place in the tile; each further
      // such tap (up taps on) is the next pixel. No division inside the loops.
      const int ty0 = pos_mod(-uy0, upy), tx0 = pos_mod(-ux0, upx);
      const float* trow = tile + ((uy0 + ty0) / upy - iy_lo) * tile_in_w + ((ux0 + tx0) / upx - ix_lo);
      float acc = 0.0f;
      for (int ty = ty0; ty < fh; ty += upy, trow += tile_in_w) {
        const float* frow = f + ty * fw;
        const float* t = trow;
        for (int tx = tx0; tx < fw; tx += upx, ++t) acc += *t * __ldg(frow + tx);
      }
      y[(plane * OH + oy) * static_cast<int64_t>(OW) + ox] = static_cast<scalar_t>(acc);
    }
  }
}

// The common cases (a 4x4 filter with up and down in {1, 2}: StyleGAN2's resampling and its
// gradients) with the factors, the filter size and the tile known at compile time. A block of 256
// threads computes a TOH x TOW tile of one plane; each thread one column of TOH / 4 outputs,
// 4 rows apart. Along that column the phase of the taps against the zero-inserted grid does not
// change (4 * DOWN is a multiple of UP), so each thread keeps its (FH / UP) x (FW / UP) live taps in
// registers, and the tap loops unroll. Same maths and order of terms as upfirdn2d_kernel.
constexpr int kThreads = 256;

template <typename scalar_t, int UPX, int UPY, int DOWNX, int DOWNY, int FW, int FH, int TOW, int TOH>
__global__ void __launch_bounds__(kThreads) upfirdn2d_tiled_kernel(
    const scalar_t* __restrict__ x, const float* __restrict__ f, scalar_t* __restrict__ y, int64_t planes,
    int H, int W, int OH, int OW, int px0, int py0) {
  constexpr int kRowStep = kThreads / TOW;
  constexpr int kRowsPerThread = TOH / kRowStep;
  static_assert(kThreads % TOW == 0 && TOH % kRowStep == 0, "tile does not fit the block");
  static_assert((kRowStep * DOWNY) % UPY == 0, "the taps' phase must be constant along a thread's column");
  static_assert(FW % UPX == 0 && FH % UPY == 0, "every phase must have the same number of live taps");
  constexpr int kTapsX = FW / UPX, kTapsY = FH / UPY;
  constexpr int kTileInW = ((TOW - 1) * DOWNX + FW - 1) / UPX + 2;
  constexpr int kTileInH = ((TOH - 1) * DOWNY + FH - 1) / UPY + 2;
  __shared__ float tile[kTileInH][kTileInW];

  const int tid = threadIdx.x;
  const int col = tid % TOW, row0 = tid / TOW;
  const int ox = blockIdx.x * TOW + col;
  const int oy_first = blockIdx.y * TOH + row0;
  const int ix_lo = ceil_div(static_cast<int>(blockIdx.x) * TOW * DOWNX - px0, UPX);
  const int iy_lo = ceil_div(static_cast<int>(blockIdx.y) * TOH * DOWNY - py0, UPY);
  const int ux0 = ox * DOWNX - px0, uy0 = oy_first * DOWNY - py0;
  const int tx0 = pos_mod(-ux0, UPX), ty0 = pos_mod(-uy0, UPY);
  // This thread's first input pixel (relative to the tile) for its first row.
  const int tcol = (ux0 + tx0) / UPX - ix_lo;
  const int trow0 = (uy0 + ty0) / UPY - iy_lo;
  float taps[kTapsY][kTapsX];
#pragma unroll
  for (int i = 0; i < kTapsY; ++i)
#pragma unroll
    for (int j = 0; j < kTapsX; ++j) taps[i][j] = __ldg(f + (ty0 + i * UPY) * FW + tx0 + j * UPX);

  for (int64_t plane = blockIdx.z; plane < planes; plane += gridDim.z) {
    const scalar_t* xp = x + plane * static_cast<int64_t>(H) * W;
    __syncthreads();   // the previous plane's reads are done
    for (int k = tid; k < kTileInW * kTileInH; k += kThreads) {
      const int iy = iy_lo + k / kTileInW, ix = ix_lo + k % kTileInW;
      tile[k / kTileInW][k % kTileInW] =
          (iy >= 0 && iy < H && ix >= 0 && ix < W) ? static_cast<float>(xp[static_cast<int64_t>(iy) * W + ix]) : 0.0f;
    }
    __syncthreads();
    if (ox >= OW) continue;
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) {
      const int oy = oy_first + r * kRowStep;
      if (oy >= OH) break;
      const int trow = trow0 + r * (kRowStep * DOWNY / UPY);
      float acc = 0.0f;
#pragma unroll
      for (int i = 0; i < kTapsY; ++i)
#pragma unroll
        for (int j = 0; j < kTapsX; ++j) acc += tile[trow + i][tcol + j] * taps[i][j];
      y[(plane * OH + oy) * static_cast<int64_t>(OW) + ox] = static_cast<scalar_t>(acc);
    }
  }
}

template <typename scalar_t, int UPX, int UPY, int DOWNX, int DOWNY, int TOW, int TOH>
void launch_tiled(const torch::Tensor& x, const torch::Tensor& f, torch::Tensor& y, int64_t NC, int H, int W,
                  int OH, int OW, int px0, int py0, cudaStream_t stream) {
  const dim3 grid((OW + TOW - 1) / TOW, (OH + TOH - 1) / TOH, static_cast<unsigned>(std::min<int64_t>(NC, 65535)));
  upfirdn2d_tiled_kernel<scalar_t, UPX, UPY, DOWNX, DOWNY, 4, 4, TOW, TOH><<<grid, kThreads, 0, stream>>>(
      x.data_ptr<scalar_t>(), f.data_ptr<float>(), y.data_ptr<scalar_t>(), NC, H, W, OH, OW, px0, py0);
}

// Runs the compile-time kernel when (up, down, filter) is one of its cases; false otherwise.
template <typename scalar_t>
bool try_tiled(const torch::Tensor& x, const torch::Tensor& f, torch::Tensor& y, int upx, int upy, int downx,
               int downy, int px0, int py0, cudaStream_t stream) {
  if (f.size(0) != 4 || f.size(1) != 4 || upx != upy || downx != downy) return false;
  const int64_t NC = x.size(0);
  const int H = static_cast<int>(x.size(1)), W = static_cast<int>(x.size(2));
  const int OH = static_cast<int>(y.size(1)), OW = static_cast<int>(y.size(2));
  if (upx == 1 && downx == 1) {
    launch_tiled<scalar_t, 1, 1, 1, 1, 64, 32>(x, f, y, NC, H, W, OH, OW, px0, py0, stream);
  } else if (upx == 2 && downx == 1) {
    launch_tiled<scalar_t, 2, 2, 1, 1, 64, 32>(x, f, y, NC, H, W, OH, OW, px0, py0, stream);
  } else if (upx == 1 && downx == 2) {
    launch_tiled<scalar_t, 1, 1, 2, 2, 64, 16>(x, f, y, NC, H, W, OH, OW, px0, py0, stream);
  } else {
    return false;
  }
  return true;
}

}  // namespace

// x [NC, H, W] contiguous; f [fh, fw] float32 contiguous (oriented, gain applied).
// Returns [NC, OH, OW] with OH = (H * upy + py0 + py1 - fh) / downy + 1 (likewise OW).
// use_tiled: the compile-time kernel for its cases (false: always the general one, for tests).
torch::Tensor upfirdn2d_forward(torch::Tensor x, torch::Tensor f, int upx, int upy, int downx, int downy,
                                int px0, int px1, int py0, int py1, bool use_tiled) {
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
  if (NC * OH * OW == 0) return y;
  auto stream = at::cuda::getCurrentCUDAStream();
  bool done = false;
  if (use_tiled) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "upfirdn2d_tiled", [&] {
      done = try_tiled<scalar_t>(x, f, y, upx, upy, downx, downy, px0, py0, stream);
    });
  }
  if (done) {
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return y;
  }
  // Input pixels under one tile's footprint, with one spare row and column for the rounding.
  const int tile_in_w = ((kTileW - 1) * downx + fw - 1) / upx + 2;
  const int tile_in_h = ((kTileH - 1) * downy + fh - 1) / upy + 2;
  const size_t smem = static_cast<size_t>(tile_in_w) * tile_in_h * sizeof(float);
  TORCH_CHECK(smem <= 48 * 1024, "upfirdn2d: filter too large for the kernel's tile");
  const dim3 block(kTileW, kTileH);
  const dim3 grid((OW + kTileW - 1) / kTileW, (OH + kTileH - 1) / kTileH,
                  static_cast<unsigned>(std::min<int64_t>(NC, 65535)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "upfirdn2d", [&] {
    upfirdn2d_kernel<scalar_t><<<grid, block, smem, stream>>>(
        x.data_ptr<scalar_t>(), f.data_ptr<float>(), y.data_ptr<scalar_t>(), NC, H, W, OH, OW, fh, fw,
        upx, upy, downx, downy, px0, py0, tile_in_w, tile_in_h);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &upfirdn2d_forward, "upfirdn2d forward (CUDA)");
}
