// Just enough of CUDA to run neox's kernel headers (csrc/kernels/*.cuh) on a CPU in the tests:
// a block runs as blockDim.x std::threads, __syncthreads is a barrier over them, a warp shuffle
// goes through a per-block array. Blocks run one after another, so __shared__ arrays can be
// function statics. Only what the kernels use is here.
#pragma once

#include <barrier>
#include <cmath>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

namespace emulation {
inline thread_local dim3 thread_index, block_index;
inline dim3 block_size, grid_size;
inline std::barrier<>* block_barrier = nullptr;
inline std::vector<float>* lanes = nullptr;  // one slot per thread, for warp shuffles
}  // namespace emulation

#define threadIdx emulation::thread_index
#define blockIdx emulation::block_index
#define blockDim emulation::block_size
#define gridDim emulation::grid_size

inline void __syncthreads() { emulation::block_barrier->arrive_and_wait(); }

// Every thread of the block calls the shuffles of block_sum together, so a block-wide exchange
// stands in for the warp-wide one (xor offsets below 32 stay within the warp).
inline float __shfl_xor_sync(unsigned, float value, int offset) {
  (*emulation::lanes)[threadIdx.x] = value;
  __syncthreads();
  const float other = (*emulation::lanes)[threadIdx.x ^ offset];
  __syncthreads();
  return other;
}

inline float rsqrtf(float v) { return 1.f / std::sqrt(v); }
inline float __fmul_rn(float a, float b) { return a * b; }

// kernel<<<grid, block>>>(args...)
template <typename Kernel, typename... Args>
void launch(dim3 grid, dim3 block, Kernel kernel, Args... args) {
  emulation::grid_size = grid;
  emulation::block_size = block;
  std::vector<float> lanes(block.x);
  emulation::lanes = &lanes;
  for (unsigned by = 0; by < grid.y; ++by) {
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      std::barrier<> barrier(block.x);
      emulation::block_barrier = &barrier;
      std::vector<std::thread> threads;
      for (unsigned t = 0; t < block.x; ++t) {
        threads.emplace_back([&, t] {
          emulation::block_index = {bx, by, 1};
          emulation::thread_index = {t, 0, 0};
          kernel(args...);
        });
      }
      for (std::thread& thread : threads) thread.join();
    }
  }
}
