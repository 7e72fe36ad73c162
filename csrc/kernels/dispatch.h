// The dtype dispatch of neox's fused kernels (host side).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

namespace neox {

// Calls f(T{}) with T the C++ type of `dtype`; the kernels take float32, float16 and bfloat16.
template <typename F>
void dispatch_float(at::ScalarType dtype, const char* name, F&& f) {
  switch (dtype) {
    case at::kFloat:
      f(float{});
      break;
    case at::kHalf:
      f(c10::Half{});
      break;
    case at::kBFloat16:
      f(c10::BFloat16{});
      break;
    default:
      TORCH_CHECK(false, name, ": float32, float16 or bfloat16 tensors only, got ", dtype);
  }
}

}  // namespace neox
