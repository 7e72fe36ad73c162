// The rotary kernel (device code only); launched by rotary.cu.
#pragma once

#include <cstdint>

#include "device.cuh"

namespace neox {

// x, out (rows, dim) with row = (batch, head, position) flattened and position = row % seq;
// cos, sin (seq, rot) in float32.
//   forward:  out_j = x_j cos_j - x_{j+h} sin_j        (j < h = rot / 2)
//             out_j = x_j cos_j + x_{j-h} sin_j        (h <= j < rot)
//   backward: dx_j  = g_j cos_j + g_{j+h} sin_{j+h}    (j < h)
//             dx_j  = g_j cos_j - g_{j-h} sin_{j-h}    (h <= j < rot)
// with cos and sin rounded to T first and each product rounded to T, as the reference does.
template <typename T, bool kBackward>
__global__ void rotary_kernel(const T* __restrict__ x, const float* __restrict__ cos,
                              const float* __restrict__ sin, T* __restrict__ out, int64_t n,
                              int64_t seq, int64_t dim, int64_t rot) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  const int64_t half = rot / 2;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += stride) {
    const int64_t j = i % dim;
    if (j >= rot) {
      out[i] = x[i];
      continue;
    }
    const int64_t angles = ((i / dim) % seq) * rot;  // this position's row of cos / sin
    const bool first = j < half;
    const int64_t partner = first ? i + half : i - half;
    const int64_t sin_j = kBackward ? (first ? j + half : j - half) : j;
    const float c = round_to<T>(cos[angles + j]);
    const float s = round_to<T>(sin[angles + sin_j]);
    const float sign = first != kBackward ? -1.f : 1.f;
    const float straight = round_to<T>(__fmul_rn(static_cast<float>(x[i]), c));
    const float turned = round_to<T>(__fmul_rn(sign * static_cast<float>(x[partner]), s));
    out[i] = static_cast<T>(straight + turned);
  }
}

}  // namespace neox
