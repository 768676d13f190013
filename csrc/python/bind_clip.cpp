// Python bindings of models/clip. Outputs are converted generically (outputs.h) and become
// ModelOutput objects in python/tessera/models/outputs.py.
#include "bindings.h"
#include "family_binding.h"
#include "node_address.h"
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
          py::arg("pixel_values"), py::arg("output_hidden_states") = false, py::arg("interpolate_pos_encoding") = false);

  bind_family_module<ClipTextTransformerImpl, ClipTextOptions>(m, "ClipTextTransformer")
      .def(
          "forward",
          [](ClipTextTransformerImpl& self, const at::Tensor& ids, const std::optional<at::Tensor>& mask, bool hidden) {
            return output_to_dict(without_gil([&] { return self.forward(ids, opt(mask), hidden); }));
          },
          py::arg("input_ids"), py::arg("attention_mask") = py::none(), py::arg("output_hidden_states") = false);

  // timm's feature API on a tower anywhere in a tree (CLIPVisionModel's root, CLIPModel.vision_model,
  // LLaVA's vision_tower), by the node's address: one code path for all of them.
  def_image_intermediates<ClipVisionTransformerImpl>(m, "vision_forward_intermediates", "a CLIP vision tower");
  def_image_head<ClipVisionTransformerImpl>(m, "vision_forward_head", "a CLIP vision tower");
  m.def(
      "text_forward_intermediates",
      [](uintptr_t node, const at::Tensor& ids, const std::optional<at::Tensor>& mask, const FeatureIndices& indices,
         bool norm, bool stop_early) {
        auto& self = node_as<ClipTextTransformerImpl>(node, "a CLIP text tower");
        const auto take = feature_indices(indices, self.encoder->num_layers);
        return output_to_dict(
            without_gil([&] { return self.forward_intermediates(ids, opt(mask), take, norm, stop_early); }));
      },
      py::arg("node"), py::arg("input_ids"), py::arg("attention_mask") = py::none(), py::arg("indices") = py::none(),
      py::arg("norm") = false, py::arg("stop_early") = false);

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
