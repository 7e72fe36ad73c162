"""The fused kernels (csrc/kernels) against their PyTorch references.

On CPU the kernels' own device code runs under a small CUDA emulation (tests/cuda_emulation,
compiled with g++), through the same custom ops and autograd as on a GPU; only the host-side
launch code of the .cu files is replaced, by `Emulated` below, which mirrors it. Those .cu files
are compiled with nvcc where it is installed, and the `gpu` tests build and run the real
extension on a GPU.
"""

from __future__ import annotations

import ctypes
import dataclasses
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils import cpp_extension

from neox_model import ModelConfig, Transformer, kernels
from neox_model.norms import RMSNorm, rms_norm_reference
from neox_model.rotary import RotaryEmbedding, apply_rotary, apply_rotary_reference
from neox_testing import style

EMULATION = Path(__file__).parent / "cuda_emulation"
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def emulated(tmp_path_factory: pytest.TempPathFactory) -> Emulated:
    if shutil.which("g++") is None:
        pytest.skip("compiling the kernels for the CPU needs g++ (C++20)")
    library = tmp_path_factory.mktemp("emulation") / "kernels_on_cpu.so"
    subprocess.run(
        ["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread"]
        + [f"-I{path}" for path in (EMULATION, kernels.source_dir(), *_torch_includes())]
        + [str(EMULATION / "kernels_on_cpu.cpp"), "-o", str(library)],
        check=True,
    )
    return Emulated(ctypes.CDLL(str(library)))


def _torch_includes() -> list[str]:
    return cpp_extension.include_paths()


class Emulated:
    """The extension's four functions with the kernels run by the emulator: the host code of
    rms_norm.cu and rotary.cu (contiguous inputs, allocation, launch geometry) in Python."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self.lib = library
        self.lib.weight_grad_chunks.restype = ctypes.c_int64
        i64, f32 = ctypes.c_int64, ctypes.c_float
        self.lib.rms_norm_forward.argtypes = (
            [ctypes.c_int] + [ctypes.c_void_p] * 4 + [i64, i64, f32]
        )
        self.lib.rms_norm_backward.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 6 + [i64, i64]
        self.lib.rotary.argtypes = (
            [ctypes.c_int] * 2 + [ctypes.c_void_p] * 4 + [i64] * 4 + [ctypes.c_uint] * 2
        )
        self.grid = (3, 64)  # blocks, threads of the rotary kernel: a grid-stride loop

    def rms_norm_forward(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> Any:
        x, weight = x.contiguous(), weight.contiguous()
        cols = x.shape[-1]
        y, rstd = torch.empty_like(x), x.new_empty(x.numel() // cols, dtype=torch.float32)
        code = DTYPE_CODES[x.dtype]
        self.lib.rms_norm_forward(code, *_ptrs(x, weight, y, rstd), rstd.numel(), cols, eps)
        return y, rstd

    def rms_norm_backward(self, dy: Any, x: Any, weight: Any, rstd: Any) -> Any:
        dy, x, weight = dy.contiguous(), x.contiguous(), weight.contiguous()
        rows, cols = rstd.numel(), x.shape[-1]
        dx = torch.empty_like(x)
        partial = x.new_empty((self.lib.weight_grad_chunks(rows), cols), dtype=torch.float32)
        pointers = _ptrs(dy, x, weight, rstd, dx, partial)
        self.lib.rms_norm_backward(DTYPE_CODES[x.dtype], *pointers, rows, cols)
        return dx, partial.sum(0).to(weight.dtype)

    def rotary_forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> Any:
        return self._rotary(x, cos, sin, backward=False)

    def rotary_backward(self, grad: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> Any:
        return self._rotary(grad, cos, sin, backward=True)

    def _rotary(self, x: Any, cos: Any, sin: Any, backward: bool) -> torch.Tensor:
        x, cos, sin = x.contiguous(), cos.contiguous(), sin.contiguous()
        out = torch.empty_like(x)
        seq, dim, rot = x.shape[-2], x.shape[-1], cos.shape[1]
        code = DTYPE_CODES[x.dtype]
        pointers = _ptrs(x, cos, sin, out)
        self.lib.rotary(code, int(backward), *pointers, x.numel(), seq, dim, rot, *self.grid)
        return out


def _ptrs(*tensors: torch.Tensor) -> list[int]:
    return [t.data_ptr() for t in tensors]


@pytest.fixture
def fused_on_cpu(emulated: Emulated, monkeypatch: pytest.MonkeyPatch) -> Emulated:
    """kernels.*_fused run the emulated kernels (through the real custom ops) on CPU tensors."""
    monkeypatch.setattr(kernels, "extension", lambda: emulated)
    return emulated


def _run(function: Any, inputs: tuple[torch.Tensor, ...], grad: torch.Tensor, *rest: Any) -> Any:
    """function(*inputs, *rest) and the gradients of the inputs for the output gradient `grad`."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = function(*leaves, *rest)
    out.backward(grad)
    assert out.dtype == inputs[0].dtype
    return (out.detach(), *(t.grad for t in leaves))


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max()).item()


# float32 agrees to rounding; half precisions to about one unit in the last place of the
# largest value (where a rounding of an intermediate lands differently)
TOLERANCE = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        (torch.float32, (2, 3, 300)),
        (torch.float16, (2, 3, 300)),
        (torch.bfloat16, (2, 3, 300)),
        (torch.float32, (130, 64)),
    ],
)
def test_rms_norm_kernels_equal_the_reference(
    fused_on_cpu: Emulated, dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    """300 columns: more than one pass of the block's 256 threads, not a multiple of it;
    (130, 64): more rows than the weight gradient's 128 chunks."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=gen) * 3).to(dtype)
    weight = (1 + torch.randn(shape[-1], generator=gen) / 4).to(dtype)
    dy = torch.randn(shape, generator=gen).to(dtype)
    fused = _run(kernels.rms_norm_fused, (x, weight), dy, 1e-5)
    reference = _run(rms_norm_reference, (x, weight), dy, 1e-5)
    for mine, theirs in zip(fused, reference, strict=True):
        assert mine.shape == theirs.shape
        assert _max_rel(mine, theirs) <= TOLERANCE[dtype]


def test_rms_norm_kernel_is_right_where_the_reference_is_too(fused_on_cpu: Emulated) -> None:
    """Against the formula in float64, independently of torch's rms_norm."""
    x = torch.randn(4, 5, 96, dtype=torch.float64)
    weight = torch.randn(96, dtype=torch.float64)
    expected = x / (x.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt() * weight
    fused = kernels.rms_norm_fused(x.float(), weight.float(), 1e-6)
    assert _max_rel(fused, expected) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rotary_pct", [1.0, 0.25])
def test_rotary_kernel_equals_the_reference_bit_for_bit(
    fused_on_cpu: Emulated, dtype: torch.dtype, rotary_pct: float
) -> None:
    """Same roundings as the reference (cos/sin to the input dtype, each product rounded): the
    same bits, forward and backward, whole and partial rotary (GPT-NeoX's rotary_pct)."""
    head_dim = 32
    rope = RotaryEmbedding(int(head_dim * rotary_pct), base=10000)
    cos, sin = rope(torch.arange(5, 12))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, head_dim, generator=gen).to(dtype)
    x = x.transpose(1, 2).contiguous().transpose(1, 2)  # a strided view, as attention has
    grad = torch.randn(x.shape, generator=gen).to(dtype)
    fused = _run(kernels.apply_rotary_fused, (x,), grad, cos, sin)
    reference = _run(apply_rotary_reference, (x,), grad, cos, sin)
    for mine, theirs in zip(fused, reference, strict=True):
        assert torch.equal(mine, theirs)


def test_rotary_kernel_is_a_rotation(fused_on_cpu: Emulated) -> None:
    """Independently of the reference: each pair (j, j + d/2) turns by its angle, lengths kept."""
    cos, sin = RotaryEmbedding(8, base=100)(torch.arange(4))
    x = torch.randn(1, 1, 4, 8)
    out = kernels.apply_rotary_fused(x, cos, sin)
    angle = torch.outer(torch.arange(4.0), 1 / 100 ** (torch.arange(0, 8, 2) / 8))
    first, second = x[..., :4], x[..., 4:]
    torch.testing.assert_close(out[..., :4], first * angle.cos() - second * angle.sin())
    torch.testing.assert_close(out[..., 4:], second * angle.cos() + first * angle.sin())
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))


def test_custom_ops_trace_under_torch_compile(fused_on_cpu: Emulated) -> None:
    """Their shape functions and autograd let torch.compile take them in one graph."""

    def block(x: torch.Tensor, weight: torch.Tensor, cos: Any, sin: Any) -> torch.Tensor:
        h = kernels.rms_norm_fused(x, weight, 1e-5)
        return kernels.apply_rotary_fused(h[:, None], cos, sin).square().sum()

    cos, sin = RotaryEmbedding(16, base=10000)(torch.arange(6))
    x, weight = torch.randn(2, 6, 16, requires_grad=True), torch.randn(16, requires_grad=True)
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    loss = compiled(x, weight, cos, sin)
    loss.backward()
    grads = x.grad, weight.grad
    x.grad = weight.grad = None
    expected = block(x, weight, cos, sin)
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grads, (x.grad, weight.grad))


def test_the_references_run_on_cpu_whatever_the_switch() -> None:
    """rmsnorm_fusion / rope_fusion on CPU tensors: the references, the same bits, no build."""
    norm, fused_norm = RMSNorm(16, 1e-5, bias=True), RMSNorm(16, 1e-5, bias=True, fused=True)
    x = torch.randn(3, 16)
    assert torch.equal(norm(x), fused_norm(x))
    cos, sin = RotaryEmbedding(8, base=10000)(torch.arange(3))
    q = torch.randn(1, 2, 3, 8)
    assert torch.equal(apply_rotary(q, cos, sin, fused=True), apply_rotary_reference(q, cos, sin))
    assert kernels.extension.cache_info().currsize == 0  # nothing was compiled


@pytest.mark.parametrize("name", ["llama", "pythia"])
def test_a_fused_model_is_the_same_model_on_cpu(name: str) -> None:
    config = style(name)
    fused = dataclasses.replace(config, rope_fusion=True, rmsnorm_fusion=True)
    ids = torch.randint(0, 64, (2, 12))
    logits = [Transformer(c, seed=3)(ids) for c in (config, fused)]
    assert torch.equal(*logits)


def test_kernels_are_built_before_training_only_where_they_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    builds = []
    monkeypatch.setattr(kernels, "extension", lambda: builds.append(1))
    config = ModelConfig(
        num_layers=1, hidden_size=8, num_attention_heads=2, seq_length=4, pos_emb="rotary"
    )
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert not kernels.build_kernels(config, cuda)  # asked for no fused kernel
    assert not kernels.build_kernels(dataclasses.replace(config, rope_fusion=True), cpu)
    # rmsnorm_fusion without RMSNorm has no effect (GPT-NeoX configs may set it anyway)
    assert not kernels.build_kernels(dataclasses.replace(config, rmsnorm_fusion=True), cuda)
    assert builds == []
    assert kernels.build_kernels(dataclasses.replace(config, rope_fusion=True), cuda)
    assert builds == [1]


def test_a_failed_build_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compiler(**_: Any) -> None:
        raise OSError("CUDA_HOME environment variable is not set")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    kernels.extension.cache_clear()
    with pytest.raises(kernels.KernelBuildError, match="rmsnorm_fusion and rope_fusion to false"):
        kernels.extension()
    kernels.extension.cache_clear()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA compiler)")
@pytest.mark.parametrize("source", ["rms_norm.cu", "rotary.cu"])
def test_cuda_sources_compile(source: str, tmp_path: Path) -> None:
    """The host and device code as the extension build compiles it (object file only: linking
    needs torch's CUDA libraries). A CPU-only torch lacks one generated c10 CUDA header, which
    only defines how c10's CUDA library was built; an empty stand-in is enough to compile."""
    includes = _torch_includes()
    generated = Path(includes[0]) / "c10/cuda/impl/cuda_cmake_macros.h"
    if not generated.exists():
        stand_in = tmp_path / "c10/cuda/impl/cuda_cmake_macros.h"
        stand_in.parent.mkdir(parents=True)
        stand_in.write_text("#pragma once\n")
        includes.append(str(tmp_path))
    python_include = sysconfig.get_paths()["include"]
    command = [
        "nvcc",
        "-c",
        str(kernels.source_dir() / source),
        "-o",
        str(tmp_path / "kernel.o"),
        "-std=c++17",
        "-gencode=arch=compute_80,code=sm_80",
        "-DTORCH_EXTENSION_NAME=neox_kernels",
        *cpp_extension.COMMON_NVCC_FLAGS,
        *[f"-I{path}" for path in (*includes, python_include)],
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_kernels_equal_the_references(dtype: torch.dtype) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(4, 128, 1000, device="cuda", generator=gen).to(dtype)
    weight = torch.randn(1000, device="cuda", generator=gen).to(dtype)
    dy = torch.randn(x.shape, device="cuda", generator=gen).to(dtype)
    fused = _run(kernels.rms_norm_fused, (x, weight), dy, 1e-5)
    reference = _run(rms_norm_reference, (x, weight), dy, 1e-5)
    for mine, theirs in zip(fused, reference, strict=True):
        assert _max_rel(mine, theirs) <= TOLERANCE[dtype] * 4  # float32 sums of 512 rows
    cos, sin = RotaryEmbedding(32, base=10000).cuda()(torch.arange(128, device="cuda"))
    q = torch.randn(4, 128, 8, 64, device="cuda", generator=gen).to(dtype).transpose(1, 2)
    grad = torch.randn(q.shape, device="cuda", generator=gen).to(dtype)
    fused = _run(kernels.apply_rotary_fused, (q,), grad, cos, sin)
    reference = _run(apply_rotary_reference, (q,), grad, cos, sin)
    for mine, theirs in zip(fused, reference, strict=True):
        assert torch.equal(mine, theirs)


@pytest.mark.gpu
@gpu
def test_a_fused_model_trains_like_the_reference_on_gpu() -> None:
    config = style("llama", hidden_size=128, seq_length=64, vocab_size=256, rotary_pct=0.5)
    fused = dataclasses.replace(config, rope_fusion=True, rmsnorm_fusion=True)
    ids = torch.randint(0, 256, (2, 64), device="cuda")
    losses, grads = [], []
    for c in (config, fused):
        model = Transformer(c, seed=5).cuda()
        loss = model(ids, labels=ids)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert abs(losses[0] - losses[1]) <= 1e-5 * abs(losses[1])
    assert _max_rel(grads[1], grads[0]) <= 1e-5


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
