// Device helpers of neox's fused kernels. Kernel headers (*.cuh) include only this file, so that
// the tests can also compile them for the CPU with a CUDA emulation header.
#pragma once

namespace neox {

// Rounds v to T and back: the fused kernels round where the PyTorch reference stores a T tensor,
// so that both agree to the last bit in float32 and to about one unit in the last place otherwise.
template <typename T>
__device__ __forceinline__ float round_to(float v) {
  return static_cast<float>(static_cast<T>(v));
}

// The sum of v over a block of blockDim.x threads (a multiple of 32, at most 1024); every thread
// gets it. `scratch` holds one float per warp.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x / 32) ? scratch[lane] : 0.f;
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  __syncthreads();  // every warp has read scratch before anyone writes it again
  return v;
}

}  // namespace neox
