// Fused RMSNorm (Zhang & Sennrich, 2019): y = T(x * rsqrt(mean(x^2) + eps)) * weight over the
// last dimension, one block per row, and its backward. The reference it must equal is
// neox_model.kernels.rms_norm_reference.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>
#include <tuple>

#include "dispatch.h"
#include "rms_norm.cuh"

namespace neox {
namespace {

void check_inputs(const at::Tensor& x, const at::Tensor& weight, const char* name) {
  TORCH_CHECK(x.is_cuda() && weight.is_cuda(), name, ": CUDA tensors only");
  TORCH_CHECK(x.scalar_type() == weight.scalar_type(), name, ": x is ", x.scalar_type(),
              " but weight is ", weight.scalar_type());
  TORCH_CHECK(x.dim() >= 1 && weight.dim() == 1 && x.size(-1) == weight.numel(), name,
              ": weight (", weight.numel(), ") must match the last dimension of x");
  TORCH_CHECK(x.numel() / (x.size(-1) ? x.size(-1) : 1) <= INT32_MAX, name,
              ": more rows than one grid launches (2^31 - 1)");
}

}  // namespace

// x (..., cols), weight (cols) -> y like x, rstd (rows) in float32.
std::tuple<at::Tensor, at::Tensor> rms_norm_forward(const at::Tensor& x, const at::Tensor& weight,
                                                    double eps) {
  check_inputs(x, weight, "rms_norm_forward");
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous(), wc = weight.contiguous();
  const int64_t cols = x.size(-1), rows = cols ? xc.numel() / cols : 0;
  at::Tensor y = at::empty_like(xc);
  at::Tensor rstd = at::empty({rows}, x.options().dtype(at::kFloat));
  if (rows == 0 || cols == 0) return {y, rstd};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_float(x.scalar_type(), "rms_norm_forward", [&](auto tag) {
    using T = decltype(tag);
    rms_norm_forward_kernel<T><<<rows, kRmsNormThreads, 0, stream>>>(
        xc.data_ptr<T>(), wc.data_ptr<T>(), y.data_ptr<T>(), rstd.data_ptr<float>(), cols,
        static_cast<float>(eps));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {y, rstd};
}

// The gradients of x and weight from dy and the forward's x, weight and rstd.
std::tuple<at::Tensor, at::Tensor> rms_norm_backward(const at::Tensor& dy, const at::Tensor& x,
                                                     const at::Tensor& weight,
                                                     const at::Tensor& rstd) {
  check_inputs(x, weight, "rms_norm_backward");
  TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(),
              "rms_norm_backward: dy must be shaped and typed like x");
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  const at::Tensor dyc = dy.contiguous(), xc = x.contiguous(), wc = weight.contiguous();
  const at::Tensor rc = rstd.contiguous();
  const int64_t cols = x.size(-1), rows = cols ? xc.numel() / cols : 0;
  TORCH_CHECK(rc.scalar_type() == at::kFloat && rc.numel() == rows,
              "rms_norm_backward: rstd must be the forward's float32 (rows) tensor");
  at::Tensor dx = at::empty_like(xc);
  if (rows == 0 || cols == 0) return {dx, at::zeros_like(weight)};
  const int64_t chunks = weight_grad_chunks(rows);
  const int64_t rows_per_chunk = (rows + chunks - 1) / chunks;
  at::Tensor partial = at::empty({chunks, cols}, x.options().dtype(at::kFloat));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_float(x.scalar_type(), "rms_norm_backward", [&](auto tag) {
    using T = decltype(tag);
    rms_norm_input_grad_kernel<T><<<rows, kRmsNormThreads, 0, stream>>>(
        dyc.data_ptr<T>(), xc.data_ptr<T>(), wc.data_ptr<T>(), rc.data_ptr<float>(),
        dx.data_ptr<T>(), cols);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const dim3 grid((cols + kRmsNormThreads - 1) / kRmsNormThreads, chunks);
    rms_norm_weight_grad_kernel<T><<<grid, kRmsNormThreads, 0, stream>>>(
        dyc.data_ptr<T>(), xc.data_ptr<T>(), rc.data_ptr<float>(), partial.data_ptr<float>(),
        rows, cols, rows_per_chunk);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dx, partial.sum(0).to(weight.scalar_type())};
}

}  // namespace neox
