// Fused rotary position embedding (Su et al., 2021), GPT-NeoX's "rotate half" layout: the first
// `rot` dimensions of each head rotate in pairs (j, j + rot / 2), the rest pass through. One
// thread per element; the backward is the rotation by the opposite angle. The reference it must
// equal is neox_model.rotary.apply_rotary_reference.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "dispatch.h"
#include "rotary.cuh"

namespace neox {
namespace {

constexpr int kThreads = 256;

template <bool kBackward>
at::Tensor rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                  const char* name) {
  TORCH_CHECK(x.is_cuda() && cos.is_cuda() && sin.is_cuda(), name, ": CUDA tensors only");
  TORCH_CHECK(x.dim() >= 2, name, ": x must be (..., seq, head_dim)");
  TORCH_CHECK(cos.dim() == 2 && cos.sizes() == sin.sizes(), name,
              ": cos and sin must both be (seq, rotary_dim)");
  TORCH_CHECK(cos.scalar_type() == at::kFloat && sin.scalar_type() == at::kFloat, name,
              ": cos and sin must be float32");
  const int64_t seq = x.size(-2), dim = x.size(-1), rot = cos.size(1);
  TORCH_CHECK(cos.size(0) == seq, name, ": cos has ", cos.size(0), " positions, x has ", seq);
  TORCH_CHECK(rot % 2 == 0 && rot <= dim, name, ": rotary_dim ", rot,
              " must be even and at most head_dim ", dim);
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous(), cc = cos.contiguous(), sc = sin.contiguous();
  at::Tensor out = at::empty_like(xc);
  const int64_t n = xc.numel();
  if (n == 0) return out;
  const int64_t blocks_needed = (n + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(blocks_needed < 65535 * 8 ? blocks_needed : 65535 * 8);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_float(x.scalar_type(), name, [&](auto tag) {
    using T = decltype(tag);
    rotary_kernel<T, kBackward><<<blocks, kThreads, 0, stream>>>(
        xc.data_ptr<T>(), cc.data_ptr<float>(), sc.data_ptr<float>(), out.data_ptr<T>(), n, seq,
        dim, rot);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

// x (..., seq, head_dim) rotated by cos, sin (seq, rotary_dim); contiguous, shaped like x.
at::Tensor rotary_forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return rotary<false>(x, cos, sin, "rotary_forward");
}

// The gradient of x from the output's gradient (the transposed rotation).
at::Tensor rotary_backward(const at::Tensor& grad, const at::Tensor& cos, const at::Tensor& sin) {
  return rotary<true>(grad, cos, sin, "rotary_backward");
}

}  // namespace neox
