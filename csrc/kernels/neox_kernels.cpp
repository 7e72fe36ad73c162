// Python bindings of neox's fused GPU kernels; built on first use by neox_model.kernels with
// torch.utils.cpp_extension.
#include <torch/extension.h>

#include <tuple>

namespace neox {
std::tuple<at::Tensor, at::Tensor> rms_norm_forward(const at::Tensor& x, const at::Tensor& weight,
                                                    double eps);
std::tuple<at::Tensor, at::Tensor> rms_norm_backward(const at::Tensor& dy, const at::Tensor& x,
                                                     const at::Tensor& weight,
                                                     const at::Tensor& rstd);
at::Tensor rotary_forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
at::Tensor rotary_backward(const at::Tensor& grad, const at::Tensor& cos, const at::Tensor& sin);
}  // namespace neox

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rms_norm_forward", &neox::rms_norm_forward,
        "RMSNorm over the last dimension: (x, weight, eps) -> (y, rstd)");
  m.def("rms_norm_backward", &neox::rms_norm_backward,
        "RMSNorm backward: (dy, x, weight, rstd) -> (dx, dweight)");
  m.def("rotary_forward", &neox::rotary_forward,
        "Rotary embedding, rotate-half layout: (x, cos, sin) -> rotated x");
  m.def("rotary_backward", &neox::rotary_backward,
        "Rotary embedding backward: (grad, cos, sin) -> grad of x");
}
