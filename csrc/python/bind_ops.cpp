// Python bindings of csrc/tessera/ops (soft-DTW, the global alignment kernel, Sugar's triple
// kernel); python/tessera/ops.py adds the argument conventions (lengths as a pair).
#include "bindings.h"
#include "tessera/nn/attention.h"
#include "tessera/nn/attention_precision.h"
#include "tessera/nn/decode_layer.h"
#include "tessera/nn/step_attention_backend.h"
#include "tessera/ops/decode_attention.h"
#include "tessera/ops/decode_argmax.h"
#include "tessera/ops/decode_elementwise.h"
#include "tessera/ops/decode_linear.h"
#include "tessera/ops/linear_fp32_out.h"
#include "tessera/ops/decode_linear_kernels.h"
#include "tessera/ops/gak.h"
#include "tessera/ops/onednn_linear.h"
#include "tessera/ops/soft_dtw.h"

#include <ATen/cpu/Utils.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

namespace tessera::python {
namespace {

at::Tensor or_undefined(const std::optional<at::Tensor>& t) { return t ? *t : at::Tensor(); }

ops::GakOptions gak_options(std::optional<double> sigma, double delta, bool normalized,
                            const std::optional<at::Tensor>& x_lengths, const std::optional<at::Tensor>& y_lengths) {
  ops::GakOptions o;
  o.sigma = sigma;
  o.delta = delta;
  o.normalized = normalized;
  o.x_lengths = or_undefined(x_lengths);
  o.y_lengths = or_undefined(y_lengths);
  return o;
}

}  // namespace

void bind_ops(py::module_& m) {
  m.def(
      "soft_dtw",
      [](const at::Tensor& cost, double gamma, const std::optional<at::Tensor>& x_lengths,
         const std::optional<at::Tensor>& y_lengths) {
        return without_gil([&] { return ops::soft_dtw(cost, gamma, or_undefined(x_lengths), or_undefined(y_lengths)); });
      },
      py::arg("cost"), py::arg("gamma") = 1.0, py::arg("x_lengths") = py::none(), py::arg("y_lengths") = py::none(),
      "Soft-DTW of cost [B, N, M] (or [N, M]) -> [B] (or 0-d); gamma = 0 is hard DTW.");
  m.def(
      "gak",
      [](const at::Tensor& x, const at::Tensor& y, std::optional<double> sigma, double delta, bool normalized,
         const std::optional<at::Tensor>& xl, const std::optional<at::Tensor>& yl) {
        const auto o = gak_options(sigma, delta, normalized, xl, yl);
        return without_gil([&] { return ops::gak(x, y, o); });
      },
      py::arg("x"), py::arg("y"), py::arg("sigma") = py::none(), py::arg("delta") = 1.0, py::arg("normalized") = true,
      py::arg("x_lengths") = py::none(), py::arg("y_lengths") = py::none(),
      "Global alignment kernel of x [B, N, D] and y [B, M, D] (squared Euclidean local cost).");
  m.def(
      "gak_from_cost",
      [](const at::Tensor& xy, const std::optional<at::Tensor>& xx, const std::optional<at::Tensor>& yy,
         std::optional<double> sigma, double delta, bool normalized, const std::optional<at::Tensor>& xl,
         const std::optional<at::Tensor>& yl) {
        const auto o = gak_options(sigma, delta, normalized, xl, yl);
        return without_gil([&] { return ops::gak_from_cost(xy, or_undefined(xx), or_undefined(yy), o); });
      },
      py::arg("xy"), py::arg("xx") = py::none(), py::arg("yy") = py::none(), py::arg("sigma") = py::none(),
      py::arg("delta") = 1.0, py::arg("normalized") = true, py::arg("x_lengths") = py::none(),
      py::arg("y_lengths") = py::none(), "Global alignment kernel from local costs phi.");
  m.def(
      "decode_linear",
      [](const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
         std::optional<at::ScalarType> out_dtype) {
        return without_gil([&] { return ops::decode_linear(x, weight, bias.value_or(at::Tensor()), out_dtype); });
      },
      py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(), py::arg("out_dtype") = py::none(),
      "x W^T + b for at most 8 rows against a bf16 weight, fp32 accumulation (decode_linear.h).");
  m.def("decode_linear_applies", &ops::decode_linear_applies, py::arg("x"), py::arg("weight"));
  m.def(
      "cuda_linear_fp32_out",
      [](const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
        return without_gil([&] { return ops::cuda_linear_fp32_out(x, weight, bias.value_or(at::Tensor())); });
      },
      py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(),
      "x W^T + b in fp32 from bf16/fp16 CUDA tensors (the LM head while decoding), or None.");
  m.def(
      "linear",
      [](const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
        return without_gil([&] { return ops::linear(x, weight, bias.value_or(at::Tensor())); });
      },
      py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(),
      "at::linear, through oneDNN for fp32 inference where it applies (onednn_linear.h).");
  m.def(
      "onednn_linear_applies",
      [](const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
        return ops::onednn_linear_applies(x, weight, bias.value_or(at::Tensor()));
      },
      py::arg("x"), py::arg("weight"), py::arg("bias") = py::none());
  m.def("set_onednn_linear_enabled", &ops::set_onednn_linear_enabled, py::arg("on"));
  m.def("onednn_linear_enabled", &ops::onednn_linear_enabled);
  m.def("set_fused_decoding_enabled", &nn::set_fused_decoding_enabled, py::arg("on"),
        "Decoding steps through a LLaMA-style layer in one pass (on by default) or through its modules.");
  m.def("fused_decoding_enabled", &nn::fused_decoding_enabled);
  m.def("fused_decoding_steps", &nn::fused_decoding_steps, "Layer steps the fused decoding path has taken.");
  m.def("set_step_attention_avoids_cudnn", &nn::set_step_attention_avoids_cudnn, py::arg("on"),
        "CUDA decoding steps leave SDPA's cuDNN backend out (on by default: it builds a plan per key length).");
  m.def("step_attention_avoids_cudnn", &nn::step_attention_avoids_cudnn);
  m.def(
      "attention",
      [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& mask,
         bool causal, double dropout_p, std::optional<double> scale) {
        return without_gil([&] { return nn::attention(q, k, v, mask.value_or(at::Tensor()), causal, dropout_p, scale); });
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask") = py::none(), py::arg("causal") = false,
      py::arg("dropout_p") = 0.0, py::arg("scale") = py::none(), "The attention every tessera layer calls (attention.h).");
  m.def(
      "attention_runs_in_fp32",
      [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double dropout_p) {
        return nn::fp32_attention_rounds_to(q, k, v, dropout_p).has_value();
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("dropout_p") = 0.0);
  m.def("set_cpu_attention_in_fp32", &nn::set_cpu_attention_in_fp32, py::arg("on"),
        "Reduced-precision CPU attention computes in fp32 where that is faster (on by default).");
  m.def("cpu_attention_in_fp32", &nn::cpu_attention_in_fp32);
  m.def(
      "cpu_flags",
      [] {
        std::vector<std::string> on;  // ATen's reading, which the precision rules use (torch 2.11 has no Python call)
        for (const auto& [name, value] : at::cpu::get_cpu_capabilities())
          if (value.isBool() && value.toBool()) on.push_back(name);
        std::sort(on.begin(), on.end());
        return on;
      },
      "The instruction-set features ATen reports on this CPU (avx512_bf16, amx_bf16, avx512_fp16, ...).");
  m.def(
      "decode_linear_int8",
      [](const at::Tensor& x, const at::Tensor& q_weight, const at::Tensor& scale, const std::optional<at::Tensor>& bias,
         std::optional<at::ScalarType> out_dtype) {
        return without_gil(
            [&] { return ops::decode_linear_int8(x, q_weight, scale, bias.value_or(at::Tensor()), out_dtype); });
      },
      py::arg("x"), py::arg("q_weight"), py::arg("scale"), py::arg("bias") = py::none(),
      py::arg("out_dtype") = py::none(), "x (q_weight * scale)^T + b for at most 8 rows (decode_linear.h).");
  m.def("quantize_int8_rows", &ops::quantize_int8_rows, py::arg("weight"),
        "Symmetric per-row int8: (q int8 [out, in], scale fp32 [out]) with weight ~ q * scale.");
  m.def("decode_linear_isa", &ops::detail::decode_kernel_isa, "The instruction set decode_linear runs on here.");
  // The other decoding-step kernels, bound for their tests (the layers call them by themselves).
  m.def(
      "decode_attention",
      [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& mask,
         std::optional<double> scale) { return ops::decode_attention(q, k, v, mask.value_or(at::Tensor()), scale); },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask") = py::none(), py::arg("scale") = py::none(),
      py::call_guard<py::gil_scoped_release>());
  m.def("decode_rms_norm", &ops::decode_rms_norm, py::arg("x"), py::arg("weight"), py::arg("eps"),
        py::call_guard<py::gil_scoped_release>());
  m.def("decode_argmax", &ops::decode_argmax, py::arg("scores"), py::call_guard<py::gil_scoped_release>());
  m.def("decode_rotary", &ops::decode_rotary, py::arg("x"), py::arg("cos"), py::arg("sin"),
        py::call_guard<py::gil_scoped_release>());
  m.def("triple_kernel_cost", &ops::triple_kernel_cost, py::arg("x_first"), py::arg("x_second"),
        py::arg("x_is_image"), py::arg("y_first"), py::arg("y_second"), py::arg("y_is_image"),
        py::call_guard<py::gil_scoped_release>(), "Sugar's triple-kernel local cost [B, N, M].");
}

namespace {
const bool registered = register_submodule("ops", "Alignment primitives: soft-DTW, GAK, Sugar's triple kernel", &bind_ops, 20);
}  // namespace

}  // namespace tessera::python
