// SphereHead's dual-sphere feature sampler: one pass per point computing both spheres'
// coordinates and weights, the bilinear samples of the chosen sphere(s)' three planes and
// the (weight-fused) mean over the planes. The maths is spherehead/ops/dual_sphere_reference.py's
// sample_dual_sphere; torch's grid_sample arithmetic (bilinear, zeros, align_corners=False).
//
// Layout: planes are passed channels-last, [N, 3, H, W, C] float32, so that the C lanes
// of one point read one contiguous run per corner. Thread i handles channel i % C of
// point i / C. Backward adds into channels-last float32 gradient buffers with atomicAdd.
// Point gradients (a second kernel) give each point a group of L = min(32, 2^ceil(log2 C))
// lanes of one warp: the lanes split the channels, then a shuffle reduction sums the
// group's partials and lane 0 chains them to the point (the maths is mirrored in PyTorch
// by spherehead/ops/dual_sphere.py's _point_grad_mirror, tested against autograd).
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

namespace {

constexpr float kPi = 3.14159265358979323846f;
constexpr float kSqrt3 = 1.7320508075688772f;
constexpr float kWeightEps = 1e-8f;

enum Mode { kModeA = 0, kModeB = 1, kModeFused = 2 };

struct Sph {
  float t, p, r, w;  // theta_n, phi_n, r_n, weight
};

// The reference evaluates each elementwise op as its own rounded tensor op (no fused
// multiply-add), and torch divides a CUDA tensor by a Python scalar as a multiplication by
// its float reciprocal: the intrinsics below reproduce that rounding, so that the kernel's
// coordinates equal the reference's to the last bit where the libm calls agree.
__device__ __forceinline__ Sph spherical(float a, float b, float c) {
  const float inv_pi = 1.0f / kPi, inv_sqrt3 = 1.0f / kSqrt3;
  Sph s;
  float ab2 = __fadd_rn(__fmul_rn(a, a), __fmul_rn(b, b));
  s.r = __fsub_rn(__fmul_rn(__fmul_rn(sqrtf(__fadd_rn(ab2, __fmul_rn(c, c))), inv_sqrt3), 2.0f), 1.0f);
  s.t = __fsub_rn(__fmul_rn(__fmul_rn(atan2f(sqrtf(ab2), c), inv_pi), 2.0f), 1.0f);
  s.p = __fmul_rn(atan2f(b, a), inv_pi);
  float wt = __fmul_rn(__fadd_rn(1.0f, cosf(__fmul_rn(kPi, s.t))), 0.5f);
  float wp = __fmul_rn(__fadd_rn(1.0f, cosf(__fmul_rn(kPi, s.p))), 0.5f);
  s.w = __fmul_rn(wt, wp);
  return s;
}

// q = 2 p / box_warp; A: (q_z, q_y, -q_x); B: (-q_z, -q_x, q_y).
__device__ __forceinline__ void both_spheres(const float* pt, float scale, Sph& A, Sph& B) {
  float x = __fmul_rn(pt[0], scale), y = __fmul_rn(pt[1], scale), z = __fmul_rn(pt[2], scale);
  A = spherical(z, y, -x);
  B = spherical(-z, -x, y);
}

// Bilinear corner indices and weights of torch grid_sample (align_corners=False, zeros).
struct Corners {
  int x0, y0;
  float wx0, wx1, wy0, wy1;
};

__device__ __forceinline__ Corners corners(float gx, float gy, int H, int W) {
  float ix = ((gx + 1.0f) * W - 1.0f) / 2.0f;
  float iy = ((gy + 1.0f) * H - 1.0f) / 2.0f;
  Corners k;
  float fx = floorf(ix), fy = floorf(iy);
  k.x0 = static_cast<int>(fx);
  k.y0 = static_cast<int>(fy);
  k.wx1 = ix - fx;           // weight of x0 + 1
  k.wx0 = (fx + 1.0f) - ix;  // weight of x0
  k.wy1 = iy - fy;
  k.wy0 = (fy + 1.0f) - iy;
  return k;
}

__device__ __forceinline__ bool inside(int x, int y, int H, int W) {
  return x >= 0 && x < W && y >= 0 && y < H;
}

// plane: pointer to [H, W, C] of one plane, offset by channel c.
__device__ __forceinline__ float bilinear(const float* __restrict__ plane, const Corners& k, int H, int W,
                                          int C) {
  float v = 0.0f;
  int x1 = k.x0 + 1, y1 = k.y0 + 1;
  // Same association as torch's grid_sampler_2d: nw + ne + sw + se, weight * value.
  if (inside(k.x0, k.y0, H, W)) v += __ldg(plane + (static_cast<int64_t>(k.y0) * W + k.x0) * C) * (k.wx0 * k.wy0);
  if (inside(x1, k.y0, H, W)) v += __ldg(plane + (static_cast<int64_t>(k.y0) * W + x1) * C) * (k.wx1 * k.wy0);
  if (inside(k.x0, y1, H, W)) v += __ldg(plane + (static_cast<int64_t>(y1) * W + k.x0) * C) * (k.wx0 * k.wy1);
  if (inside(x1, y1, H, W)) v += __ldg(plane + (static_cast<int64_t>(y1) * W + x1) * C) * (k.wx1 * k.wy1);
  return v;
}

__device__ __forceinline__ void bilinear_backward(float* __restrict__ plane, const Corners& k, int H, int W, int C,
                                                  float g) {
  int x1 = k.x0 + 1, y1 = k.y0 + 1;
  if (inside(k.x0, k.y0, H, W)) atomicAdd(plane + (static_cast<int64_t>(k.y0) * W + k.x0) * C, g * (k.wx0 * k.wy0));
  if (inside(x1, k.y0, H, W)) atomicAdd(plane + (static_cast<int64_t>(k.y0) * W + x1) * C, g * (k.wx1 * k.wy0));
  if (inside(k.x0, y1, H, W)) atomicAdd(plane + (static_cast<int64_t>(y1) * W + k.x0) * C, g * (k.wx0 * k.wy1));
  if (inside(x1, y1, H, W)) atomicAdd(plane + (static_cast<int64_t>(y1) * W + x1) * C, g * (k.wx1 * k.wy1));
}

// Plane g of a sphere is sampled at (theta, phi), (theta, r), (phi, r): x = first, y = second.
__device__ __forceinline__ void plane_corners(const Sph& s, int H, int W, Corners k[3]) {
  k[0] = corners(s.t, s.p, H, W);
  k[1] = corners(s.t, s.r, H, W);
  k[2] = corners(s.p, s.r, H, W);
}

__global__ void dual_sphere_forward_kernel(const float* __restrict__ planes_A, const float* __restrict__ planes_B,
                                           const float* __restrict__ points, float* __restrict__ features,
                                           float* __restrict__ ownership, int64_t M, int C, int H, int W,
                                           int64_t total, float scale, int mode, bool has_B) {
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  int c = static_cast<int>(i % C);
  int64_t point = i / C;          // n * M + m
  int64_t n = point / M;
  Sph A, B;
  both_spheres(points + point * 3, scale, A, B);
  float own = 1.0f;
  if (has_B) own = __fdiv_rn(A.w, __fadd_rn(__fadd_rn(A.w, B.w), kWeightEps));
  if (c == 0) ownership[point] = own;

  const int64_t plane_size = static_cast<int64_t>(H) * W * C;
  float fA[3] = {0.f, 0.f, 0.f}, fB[3] = {0.f, 0.f, 0.f};
  if (mode != kModeB) {
    Corners k[3];
    plane_corners(A, H, W, k);
    const float* base = planes_A + n * 3 * plane_size + c;
#pragma unroll
    for (int g = 0; g < 3; ++g) fA[g] = bilinear(base + g * plane_size, k[g], H, W, C);
  }
  if (mode != kModeA) {
    Corners k[3];
    plane_corners(B, H, W, k);
    const float* base = planes_B + n * 3 * plane_size + c;
#pragma unroll
    for (int g = 0; g < 3; ++g) fB[g] = bilinear(base + g * plane_size, k[g], H, W, C);
  }
  float sum = 0.0f;
  if (mode == kModeFused) {
    float denom = __fadd_rn(__fadd_rn(A.w, B.w), kWeightEps);
#pragma unroll
    for (int g = 0; g < 3; ++g) sum = __fadd_rn(sum, __fdiv_rn(__fadd_rn(__fmul_rn(fA[g], A.w), __fmul_rn(fB[g], B.w)), denom));
  } else {
    const float* f = mode == kModeA ? fA : fB;
    sum = __fadd_rn(__fadd_rn(f[0], f[1]), f[2]);
  }
  features[i] = __fdiv_rn(sum, 3.0f);
}

__global__ void dual_sphere_backward_kernel(const float* __restrict__ grad_features, const float* __restrict__ points,
                                            float* __restrict__ grad_A, float* __restrict__ grad_B, int64_t M, int C,
                                            int H, int W, int64_t total, float scale, int mode) {
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  int c = static_cast<int>(i % C);
  int64_t point = i / C;
  int64_t n = point / M;
  float g = grad_features[i] / 3.0f;
  if (g == 0.0f) return;
  Sph A, B;
  both_spheres(points + point * 3, scale, A, B);
  float gA = g, gB = g;
  if (mode == kModeFused) {
    float denom = A.w + B.w + kWeightEps;
    gA = g * (A.w / denom);
    gB = g * (B.w / denom);
  }
  const int64_t plane_size = static_cast<int64_t>(H) * W * C;
  if (mode != kModeB && grad_A != nullptr) {
    Corners k[3];
    plane_corners(A, H, W, k);
    float* base = grad_A + n * 3 * plane_size + c;
#pragma unroll
    for (int p = 0; p < 3; ++p) bilinear_backward(base + p * plane_size, k[p], H, W, C, gA);
  }
  if (mode != kModeA && grad_B != nullptr) {
    Corners k[3];
    plane_corners(B, H, W, k);
    float* base = grad_B + n * 3 * plane_size + c;
#pragma unroll
    for (int p = 0; p < 3; ++p) bilinear_backward(base + p * plane_size, k[p], H, W, C, gB);
  }
}

// ----------------------------------------------------------------------------- point gradients
// Jacobian rows of (theta_n, phi_n, r_n) w.r.t. the frame components (a, b, c), and the weight's
// derivatives w.r.t. theta_n and phi_n. rho = sqrt(a^2 + b^2), R = |(a, b, c)|, u = (a, b) / rho:
// d r_n = 2/sqrt(3) (a, b, c) / R; d theta_n = 2/pi (c u / R^2, -rho / R^2); d phi_n = (-u_b, u_a, 0) / (pi rho).
// At a pole (rho = 0) u is taken as 0 (phi_n is undefined there); at R = 0 every row is 0.
struct SphJac {
  float t[3], p[3], r[3];
  float dw_dt, dw_dp;
};

__device__ __forceinline__ SphJac spherical_jacobian(float a, float b, float c, const Sph& s) {
  SphJac J;
  float rho = sqrtf(a * a + b * b);
  float R = sqrtf(a * a + b * b + c * c);
  float inv_R = R > 0.0f ? 1.0f / R : 0.0f;
  float inv_rho = rho > 0.0f ? 1.0f / rho : 0.0f;
  float ua = a * inv_rho, ub = b * inv_rho;
  float kr = (2.0f / kSqrt3) * inv_R;
  float kt = (2.0f / kPi) * (c * inv_R) * inv_R;
  float kp = inv_rho / kPi;
  J.r[0] = kr * a;
  J.r[1] = kr * b;
  J.r[2] = kr * c;
  J.t[0] = kt * ua;
  J.t[1] = kt * ub;
  J.t[2] = -(2.0f / kPi) * (rho * inv_R) * inv_R;
  J.p[0] = -kp * ub;
  J.p[1] = kp * ua;
  J.p[2] = 0.0f;
  float wt = (1.0f + cosf(kPi * s.t)) * 0.5f;
  float wp = (1.0f + cosf(kPi * s.p)) * 0.5f;
  J.dw_dt = -0.5f * kPi * sinf(kPi * s.t) * wp;
  J.dw_dp = -0.5f * kPi * sinf(kPi * s.p) * wt;
  return J;
}

// The four taps of one bilinear sample: offsets of channel 0 in an [H, W, C] plane (-1 outside).
struct Taps {
  int64_t o00, o01, o10, o11;  // (x0, y0), (x1, y0), (x0, y1), (x1, y1)
  float wx0, wx1, wy0, wy1;
};

__device__ __forceinline__ int64_t tap_offset(int x, int y, int H, int W, int C) {
  return inside(x, y, H, W) ? (static_cast<int64_t>(y) * W + x) * C : -1;
}

__device__ __forceinline__ Taps taps(float gx, float gy, int H, int W, int C) {
  Corners k = corners(gx, gy, H, W);
  Taps t;
  t.o00 = tap_offset(k.x0, k.y0, H, W, C);
  t.o01 = tap_offset(k.x0 + 1, k.y0, H, W, C);
  t.o10 = tap_offset(k.x0, k.y0 + 1, H, W, C);
  t.o11 = tap_offset(k.x0 + 1, k.y0 + 1, H, W, C);
  t.wx0 = k.wx0;
  t.wx1 = k.wx1;
  t.wy0 = k.wy0;
  t.wy1 = k.wy1;
  return t;
}

__device__ __forceinline__ float tap(const float* __restrict__ plane, int64_t offset) {
  return offset >= 0 ? __ldg(plane + offset) : 0.0f;
}

// Value and derivatives w.r.t. the grid coordinates of one bilinear sample (plane offset by the
// channel); sx = W/2, sy = H/2 turn texel units into grid units (align_corners=False).
__device__ __forceinline__ void bilinear_grad(const float* __restrict__ plane, const Taps& k, float sx, float sy,
                                              float& v, float& dx, float& dy) {
  float v00 = tap(plane, k.o00), v01 = tap(plane, k.o01), v10 = tap(plane, k.o10), v11 = tap(plane, k.o11);
  v = v00 * (k.wx0 * k.wy0) + v01 * (k.wx1 * k.wy0) + v10 * (k.wx0 * k.wy1) + v11 * (k.wx1 * k.wy1);
  dx = sx * ((v01 - v00) * k.wy0 + (v11 - v10) * k.wy1);
  dy = sy * ((v10 - v00) * k.wx0 + (v11 - v01) * k.wx1);
}

// One lane's sums over its channels for one sphere: g dF/dtheta_n, g dF/dphi_n, g dF/dr_n and g F,
// F = the sum of the three planes' samples (planes at (theta, phi), (theta, r), (phi, r)).
struct Partial {
  float t, p, r, f;
};

__device__ __forceinline__ void sphere_partial(const float* __restrict__ planes_n, const Sph& s,
                                               const float* __restrict__ g_row, int lane, int lanes, int C, int H,
                                               int W, Partial& acc) {
  const int64_t plane_size = static_cast<int64_t>(H) * W * C;
  const float sx = 0.5f * W, sy = 0.5f * H;
  Taps k0 = taps(s.t, s.p, H, W, C), k1 = taps(s.t, s.r, H, W, C), k2 = taps(s.p, s.r, H, W, C);
  for (int c = lane; c < C; c += lanes) {
    float g = __ldg(g_row + c);
    float v0, x0, y0, v1, x1, y1, v2, x2, y2;
    bilinear_grad(planes_n + c, k0, sx, sy, v0, x0, y0);
    bilinear_grad(planes_n + plane_size + c, k1, sx, sy, v1, x1, y1);
    bilinear_grad(planes_n + 2 * plane_size + c, k2, sx, sy, v2, x2, y2);
    acc.t += g * (x0 + x1);
    acc.p += g * (y0 + x2);
    acc.r += g * (y1 + y2);
    acc.f += g * (v0 + v1 + v2);
  }
}

__device__ __forceinline__ void group_sum(Partial& acc, int lanes) {
  for (int offset = lanes >> 1; offset > 0; offset >>= 1) {
    acc.t += __shfl_xor_sync(0xffffffffu, acc.t, offset);
    acc.p += __shfl_xor_sync(0xffffffffu, acc.p, offset);
    acc.r += __shfl_xor_sync(0xffffffffu, acc.r, offset);
    acc.f += __shfl_xor_sync(0xffffffffu, acc.f, offset);
  }
}

// d loss / d (theta_n, phi_n, r_n) of one sphere -> d loss / d its frame components (a, b, c).
__device__ __forceinline__ void frame_grad(const SphJac& J, float gt, float gp, float gr, float out[3]) {
#pragma unroll
  for (int k = 0; k < 3; ++k) out[k] = gt * J.t[k] + gp * J.p[k] + gr * J.r[k];
}

// grad_points [N, M, 3]: every point is written (no zero-fill needed). Threads: num_points << lanes_log2;
// the block size is a multiple of 32, so a group never straddles warps and every warp is whole.
__global__ void dual_sphere_point_grad_kernel(const float* __restrict__ planes_A, const float* __restrict__ planes_B,
                                              const float* __restrict__ grad_features,
                                              const float* __restrict__ points, float* __restrict__ grad_points,
                                              int64_t M, int C, int H, int W, int64_t num_points, int lanes_log2,
                                              float scale, int mode) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int lanes = 1 << lanes_log2;
  const int64_t point = tid >> lanes_log2;
  const int lane = static_cast<int>(tid & (lanes - 1));
  const bool active = point < num_points;  // inactive lanes still join the shuffles with zeros
  Partial pa = {0.f, 0.f, 0.f, 0.f}, pb = {0.f, 0.f, 0.f, 0.f};
  float vA[3] = {0.f, 0.f, 0.f}, vB[3] = {0.f, 0.f, 0.f};
  Sph A = {0.f, 0.f, 0.f, 0.f}, B = {0.f, 0.f, 0.f, 0.f};
  if (active) {
    const float* pt = points + point * 3;
    // The forward's coordinates, bit for bit, so that every sample uses the forward's texels.
    float x = __fmul_rn(pt[0], scale), y = __fmul_rn(pt[1], scale), z = __fmul_rn(pt[2], scale);
    vA[0] = z; vA[1] = y; vA[2] = -x;    // A: (q_z, q_y, -q_x)
    vB[0] = -z; vB[1] = -x; vB[2] = y;   // B: (-q_z, -q_x, q_y)
    A = spherical(vA[0], vA[1], vA[2]);
    B = spherical(vB[0], vB[1], vB[2]);
    const int64_t n = point / M;
    const int64_t sphere_size = 3 * static_cast<int64_t>(H) * W * C;
    const float* g_row = grad_features + point * C;
    if (mode != kModeB) sphere_partial(planes_A + n * sphere_size, A, g_row, lane, lanes, C, H, W, pa);
    if (mode != kModeA) sphere_partial(planes_B + n * sphere_size, B, g_row, lane, lanes, C, H, W, pb);
  }
  group_sum(pa, lanes);
  group_sum(pb, lanes);
  if (!active || lane != 0) return;

  // d loss / d (theta_n, phi_n, r_n) of each sphere used; features = mean over the 3 planes.
  const float third = 1.0f / 3.0f;
  float gA[3] = {0.f, 0.f, 0.f}, gB[3] = {0.f, 0.f, 0.f};  // per sphere: (theta_n, phi_n, r_n)
  SphJac JA, JB;
  if (mode != kModeB) JA = spherical_jacobian(vA[0], vA[1], vA[2], A);
  if (mode != kModeA) JB = spherical_jacobian(vB[0], vB[1], vB[2], B);
  if (mode == kModeFused) {
    // fused = (FA wA + FB wB) / D, D = wA + wB + eps: d/dwA = (FA (wB + eps) - FB wB) / D^2, likewise wB.
    float D = A.w + B.w + kWeightEps;
    float D2 = D * D;
    float dL_dwA = (pa.f * (B.w + kWeightEps) - pb.f * B.w) / D2;
    float dL_dwB = (pb.f * (A.w + kWeightEps) - pa.f * A.w) / D2;
    float kA = A.w / D, kB = B.w / D;
    gA[0] = (kA * pa.t + dL_dwA * JA.dw_dt) * third;
    gA[1] = (kA * pa.p + dL_dwA * JA.dw_dp) * third;
    gA[2] = (kA * pa.r) * third;
    gB[0] = (kB * pb.t + dL_dwB * JB.dw_dt) * third;
    gB[1] = (kB * pb.p + dL_dwB * JB.dw_dp) * third;
    gB[2] = (kB * pb.r) * third;
  } else if (mode == kModeA) {
    gA[0] = pa.t * third;
    gA[1] = pa.p * third;
    gA[2] = pa.r * third;
  } else {
    gB[0] = pb.t * third;
    gB[1] = pb.p * third;
    gB[2] = pb.r * third;
  }
  float gq[3] = {0.f, 0.f, 0.f};  // d loss / d q
  float f[3];
  if (mode != kModeB) {
    frame_grad(JA, gA[0], gA[1], gA[2], f);  // A: (a, b, c) = (q_z, q_y, -q_x)
    gq[0] -= f[2];
    gq[1] += f[1];
    gq[2] += f[0];
  }
  if (mode != kModeA) {
    frame_grad(JB, gB[0], gB[1], gB[2], f);  // B: (a, b, c) = (-q_z, -q_x, q_y)
    gq[0] -= f[1];
    gq[1] += f[2];
    gq[2] -= f[0];
  }
  float* out = grad_points + point * 3;
  out[0] = gq[0] * scale;  // q = scale * p
  out[1] = gq[1] * scale;
  out[2] = gq[2] * scale;
}

void check_inputs(const torch::Tensor& planes_A, const torch::Tensor& planes_B, const torch::Tensor& points,
                  bool has_B) {
  TORCH_CHECK(planes_A.is_cuda() && points.is_cuda(), "dual_sphere: tensors must be on CUDA");
  TORCH_CHECK(planes_A.scalar_type() == torch::kFloat32 && points.scalar_type() == torch::kFloat32,
              "dual_sphere: float32 expected");
  TORCH_CHECK(planes_A.is_contiguous() && points.is_contiguous(), "dual_sphere: contiguous inputs expected");
  TORCH_CHECK(planes_A.dim() == 5 && planes_A.size(1) == 3, "planes_A: [N, 3, H, W, C] expected");
  TORCH_CHECK(points.dim() == 3 && points.size(2) == 3 && points.size(0) == planes_A.size(0),
              "points: [N, M, 3] expected");
  if (has_B) {
    TORCH_CHECK(planes_B.is_cuda() && planes_B.scalar_type() == torch::kFloat32 && planes_B.is_contiguous(),
                "planes_B: contiguous float32 CUDA tensor expected");
    TORCH_CHECK(planes_B.sizes() == planes_A.sizes(), "planes_B must have planes_A's shape");
  }
}

constexpr int kThreads = 256;

}  // namespace

// planes_A, planes_B: [N, 3, H, W, C] float32 contiguous (planes_B may be empty: single sphere);
// points [N, M, 3] float32. Returns (features [N, M, C], ownership [N, M]).
std::vector<torch::Tensor> dual_sphere_forward(torch::Tensor planes_A, torch::Tensor planes_B, torch::Tensor points,
                                               double box_warp, int64_t mode) {
  bool has_B = planes_B.numel() > 0;
  check_inputs(planes_A, planes_B, points, has_B);
  TORCH_CHECK(has_B || mode == kModeA, "single sphere: mode must be A");
  const c10::cuda::CUDAGuard guard(points.device());
  int64_t N = points.size(0), M = points.size(1);
  int C = planes_A.size(4), H = planes_A.size(2), W = planes_A.size(3);
  auto features = torch::empty({N, M, C}, points.options());
  auto ownership = torch::empty({N, M}, points.options());
  int64_t total = N * M * C;
  if (total > 0) {
    int64_t blocks = (total + kThreads - 1) / kThreads;
    dual_sphere_forward_kernel<<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        planes_A.data_ptr<float>(), has_B ? planes_B.data_ptr<float>() : nullptr, points.data_ptr<float>(),
        features.data_ptr<float>(), ownership.data_ptr<float>(), M, C, H, W, total,
        static_cast<float>(2.0 / box_warp), static_cast<int>(mode), has_B);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {features, ownership};
}

// grad_features [N, M, C] float32; grad_A / grad_B: [N, 3, H, W, C] float32 zero-filled buffers
// (empty to skip), accumulated into.
void dual_sphere_backward(torch::Tensor grad_features, torch::Tensor points, torch::Tensor grad_A,
                          torch::Tensor grad_B, double box_warp, int64_t mode) {
  TORCH_CHECK(grad_features.is_cuda() && grad_features.is_contiguous() &&
                  grad_features.scalar_type() == torch::kFloat32, "grad_features: contiguous float32 CUDA expected");
  TORCH_CHECK(points.is_contiguous() && points.scalar_type() == torch::kFloat32, "points: contiguous float32");
  bool want_A = grad_A.numel() > 0, want_B = grad_B.numel() > 0;
  const torch::Tensor& ref = want_A ? grad_A : grad_B;
  if (!want_A && !want_B) return;
  TORCH_CHECK(ref.is_contiguous() && ref.scalar_type() == torch::kFloat32 && ref.dim() == 5, "grad buffers");
  if (want_A && want_B) TORCH_CHECK(grad_A.sizes() == grad_B.sizes(), "grad buffer shapes differ");
  const c10::cuda::CUDAGuard guard(points.device());
  int64_t N = points.size(0), M = points.size(1);
  int C = ref.size(4), H = ref.size(2), W = ref.size(3);
  TORCH_CHECK(grad_features.size(0) == N && grad_features.size(1) == M && grad_features.size(2) == C,
              "grad_features shape");
  int64_t total = N * M * C;
  if (total == 0) return;
  int64_t blocks = (total + kThreads - 1) / kThreads;
  dual_sphere_backward_kernel<<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      grad_features.data_ptr<float>(), points.data_ptr<float>(), want_A ? grad_A.data_ptr<float>() : nullptr,
      want_B ? grad_B.data_ptr<float>() : nullptr, M, C, H, W, total, static_cast<float>(2.0 / box_warp),
      static_cast<int>(mode));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// planes_A, planes_B: [N, 3, H, W, C] float32 contiguous (planes_B empty: single sphere, mode A);
// grad_features [N, M, C] float32; points [N, M, 3] float32. Returns grad_points [N, M, 3].
torch::Tensor dual_sphere_point_grad(torch::Tensor planes_A, torch::Tensor planes_B, torch::Tensor grad_features,
                                     torch::Tensor points, double box_warp, int64_t mode) {
  bool has_B = planes_B.numel() > 0;
  check_inputs(planes_A, planes_B, points, has_B);
  TORCH_CHECK(has_B || mode == kModeA, "single sphere: mode must be A");
  TORCH_CHECK(grad_features.is_cuda() && grad_features.is_contiguous() &&
                  grad_features.scalar_type() == torch::kFloat32, "grad_features: contiguous float32 CUDA expected");
  const c10::cuda::CUDAGuard guard(points.device());
  int64_t N = points.size(0), M = points.size(1);
  int C = planes_A.size(4), H = planes_A.size(2), W = planes_A.size(3);
  TORCH_CHECK(grad_features.dim() == 3 && grad_features.size(0) == N && grad_features.size(1) == M &&
                  grad_features.size(2) == C, "grad_features shape");
  auto grad_points = torch::empty({N, M, 3}, points.options());
  int64_t num_points = N * M;
  if (num_points == 0) return grad_points;
  if (C == 0) return grad_points.zero_();
  int lanes_log2 = 0;
  while ((1 << lanes_log2) < C && lanes_log2 < 5) ++lanes_log2;
  int64_t threads = num_points << lanes_log2;
  int64_t blocks = (threads + kThreads - 1) / kThreads;
  dual_sphere_point_grad_kernel<<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      planes_A.data_ptr<float>(), has_B ? planes_B.data_ptr<float>() : nullptr, grad_features.data_ptr<float>(),
      points.data_ptr<float>(), grad_points.data_ptr<float>(), M, C, H, W, num_points, lanes_log2,
      static_cast<float>(2.0 / box_warp), static_cast<int>(mode));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return grad_points;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &dual_sphere_forward, "dual-sphere sampler forward (CUDA)");
  m.def("backward", &dual_sphere_backward, "dual-sphere sampler backward into plane gradients (CUDA)");
  m.def("point_grad", &dual_sphere_point_grad, "dual-sphere sampler gradient w.r.t. the points (CUDA)");
}
