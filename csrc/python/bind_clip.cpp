// Python bindings of models/clip. Outputs are converted generically (outputs.h) and become
// ModelOutput objects in python/tessera/models/outputs.py.
#include "bindings.h"
#include "family_binding.h"
#include "outputs.h"
#include "tessera/models/clip/clip_model.h"

namespace tessera::python {

void bind_clip(py::module_& m) {
  using namespace models;
  bind_resolve_config<ClipOptions>(m);
  bind_family_module<ClipVisionTransformerImpl, ClipVisionOptions>(m, "VisionTransformer")
      .def(
          "forward",
          [](ClipVisionTransformerImpl& self, const at::Tensor& px, bool hidden, bool interpolate) {
            return output_to_dict(without_gil([&] { return self.forward(px, hidden, interpolate); }));
          },
          py::arg("pixel_values"), py::arg("output_hidden_states") = false, py::arg("interpolate_pos_encoding") = false)
      .def(
          "forward_intermediates",
          [](ClipVisionTransformerImpl& self, const at::Tensor& px, const std::vector<int64_t>& indices, bool norm,
             bool stop_early, bool interpolate) {
            return output_to_dict(
                without_gil([&] { return self.forward_intermediates(px, indices, norm, stop_early, interpolate); }));
          },
          py::arg("pixel_values"), py::arg("indices"), py::arg("norm") = false, py::arg("stop_early") = false,
          py::arg("interpolate_pos_encoding") = false);

  bind_family_module<ClipTextTransformerImpl, ClipTextOptions>(m, "ClipTextTransformer")
      .def(
          "forward",
          [](ClipTextTransformerImpl& self, const at::Tensor& ids, const std::optional<at::Tensor>& mask, bool hidden) {
            return output_to_dict(without_gil([&] { return self.forward(ids, opt(mask), hidden); }));
          },
          py::arg("input_ids"), py::arg("attention_mask") = py::none(), py::arg("output_hidden_states") = false)
      .def(
          "forward_intermediates",
          [](ClipTextTransformerImpl& self, const at::Tensor& ids, const std::optional<at::Tensor>& mask,
             const std::vector<int64_t>& indices, bool norm, bool stop_early) {
            return output_to_dict(
                without_gil([&] { return self.forward_intermediates(ids, opt(mask), indices, norm, stop_early); }));
          },
          py::arg("input_ids"), py::arg("attention_mask"), py::arg("indices"), py::arg("norm") = false,
          py::arg("stop_early") = false);

  bind_family_module<ClipModelImpl, ClipOptions>(m, "ClipModel")
      .def(
          "forward",
          [](ClipModelImpl& self, const at::Tensor& px, const at::Tensor& ids, const std::optional<at::Tensor>& mask,
             bool return_loss, bool hidden, bool interpolate) {
            return output_to_dict(
                without_gil([&] { return self.forward(px, ids, opt(mask), return_loss, hidden, interpolate); }));
          },
          py::arg("pixel_values"), py::arg("input_ids"), py::arg("attention_mask") = py::none(),
          py::arg("return_loss") = false, py::arg("output_hidden_states") = false,
          py::arg("interpolate_pos_encoding") = false)
      .def("get_image_features", &ClipModelImpl::get_image_features, py::arg("pixel_values"),
           py::arg("interpolate_pos_encoding") = false, py::call_guard<py::gil_scoped_release>())
      .def(
          "get_text_features",
          [](ClipModelImpl& self, const at::Tensor& ids, const std::optional<at::Tensor>& mask) {
            return without_gil([&] { return self.get_text_features(ids, opt(mask)); });
          },
          py::arg("input_ids"), py::arg("attention_mask") = py::none());
}

namespace {
const bool registered = register_submodule("clip", "CLIP and its vision/text towers", &bind_clip, 10);
}  // namespace

}  // namespace tessera::python
