// C entry points that run neox's CUDA kernels (csrc/kernels/*.cuh) under emulation.h, with the
// launch geometry of the host code in csrc/kernels/*.cu. Built and called by test_kernels.py.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "emulation.h"
#include "rms_norm.cuh"
#include "rotary.cuh"

using neox::kRmsNormThreads;

namespace {

// dtype codes: 0 float32, 1 float16, 2 bfloat16
template <typename F>
void with_type(int dtype, F&& f) {
  if (dtype == 0) f(float{});
  if (dtype == 1) f(c10::Half{});
  if (dtype == 2) f(c10::BFloat16{});
}

}  // namespace

extern "C" {

void rms_norm_forward(int dtype, const void* x, const void* weight, void* y, float* rstd,
                      int64_t rows, int64_t cols, float eps) {
  with_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    launch(dim3{static_cast<unsigned>(rows)}, dim3{kRmsNormThreads},
           neox::rms_norm_forward_kernel<T>, static_cast<const T*>(x),
           static_cast<const T*>(weight), static_cast<T*>(y), rstd, cols, eps);
  });
}

// partial: (weight_grad_chunks(rows), cols) float32, summed over its first dimension by the caller
void rms_norm_backward(int dtype, const void* dy, const void* x, const void* weight,
                       const float* rstd, void* dx, float* partial, int64_t rows, int64_t cols) {
  const int64_t chunks = neox::weight_grad_chunks(rows);
  const int64_t rows_per_chunk = (rows + chunks - 1) / chunks;
  with_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    launch(dim3{static_cast<unsigned>(rows)}, dim3{kRmsNormThreads},
           neox::rms_norm_input_grad_kernel<T>, static_cast<const T*>(dy),
           static_cast<const T*>(x), static_cast<const T*>(weight), rstd, static_cast<T*>(dx),
           cols);
    const dim3 grid{static_cast<unsigned>((cols + kRmsNormThreads - 1) / kRmsNormThreads),
                    static_cast<unsigned>(chunks)};
    launch(grid, dim3{kRmsNormThreads}, neox::rms_norm_weight_grad_kernel<T>,
           static_cast<const T*>(dy), static_cast<const T*>(x), rstd, partial, rows, cols,
           rows_per_chunk);
  });
}

int64_t weight_grad_chunks(int64_t rows) { return neox::weight_grad_chunks(rows); }

// A small grid (blocks x threads), so that the grid-stride loop takes several turns.
void rotary(int dtype, int backward, const void* x, const float* cos, const float* sin, void* out,
            int64_t n, int64_t seq, int64_t dim, int64_t rot, unsigned blocks, unsigned threads) {
  with_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    const auto kernel = backward ? neox::rotary_kernel<T, true> : neox::rotary_kernel<T, false>;
    launch(dim3{blocks}, dim3{threads}, kernel, static_cast<const T*>(x), cos, sin,
           static_cast<T*>(out), n, seq, dim, rot);
  });
}

}  // extern "C"
