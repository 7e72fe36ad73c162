// The RMSNorm kernels (device code only); launched by rms_norm.cu.
#pragma once

#include <cstdint>

#include "device.cuh"

namespace neox {

constexpr int kRmsNormThreads = 256;   // one block of 8 warps per row
constexpr int64_t kWeightChunks = 128;  // row chunks summed separately for the weight gradient

// How many row chunks the weight gradient is summed over (at most one per row).
inline int64_t weight_grad_chunks(int64_t rows) { return rows < kWeightChunks ? rows : kWeightChunks; }

template <typename T>
__global__ void rms_norm_forward_kernel(const T* __restrict__ x, const T* __restrict__ weight,
                                        T* __restrict__ y, float* __restrict__ rstd, int64_t cols,
                                        float eps) {
  __shared__ float scratch[32];
  const T* xr = x + blockIdx.x * cols;
  T* yr = y + blockIdx.x * cols;
  float squares = 0.f;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    const float v = static_cast<float>(xr[i]);
    squares += v * v;
  }
  const float r = rsqrtf(block_sum(squares, scratch) / static_cast<float>(cols) + eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    const float normed = round_to<T>(static_cast<float>(xr[i]) * r);
    yr[i] = static_cast<T>(normed * static_cast<float>(weight[i]));
  }
}

// dx = r * gw - x * r^3 * mean(gw * x), gw = dy * weight (rounded to T, as the reference's
// product is a T tensor).
template <typename T>
__global__ void rms_norm_input_grad_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                           const T* __restrict__ weight,
                                           const float* __restrict__ rstd, T* __restrict__ dx,
                                           int64_t cols) {
  __shared__ float scratch[32];
  const int64_t offset = blockIdx.x * cols;
  const float r = rstd[blockIdx.x];
  float dot = 0.f;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    const float gw = round_to<T>(static_cast<float>(dy[offset + i]) * static_cast<float>(weight[i]));
    dot += gw * static_cast<float>(x[offset + i]);
  }
  const float mean_dot = block_sum(dot, scratch) / static_cast<float>(cols);
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    const float gw = round_to<T>(static_cast<float>(dy[offset + i]) * static_cast<float>(weight[i]));
    const float xv = static_cast<float>(x[offset + i]);
    dx[offset + i] = static_cast<T>(r * gw - xv * r * r * r * mean_dot);
  }
}

// partial[chunk, j] = sum over the chunk's rows of dy[row, j] * T(x[row, j] * rstd[row]); one
// thread per column, so neighbouring threads read neighbouring addresses. Summed in a fixed
// order (no atomics): the weight gradient is the same on every run.
template <typename T>
__global__ void rms_norm_weight_grad_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                            const float* __restrict__ rstd,
                                            float* __restrict__ partial, int64_t rows,
                                            int64_t cols, int64_t rows_per_chunk) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= cols) return;
  const int64_t first = blockIdx.y * rows_per_chunk;
  const int64_t last = first + rows_per_chunk < rows ? first + rows_per_chunk : rows;
  float sum = 0.f;
  for (int64_t row = first; row < last; ++row) {
    const float normed = round_to<T>(static_cast<float>(x[row * cols + j]) * rstd[row]);
    sum += round_to<T>(static_cast<float>(dy[row * cols + j]) * normed);
  }
  partial[blockIdx.y * cols + j] = sum;
}

}  // namespace neox
