// Python bindings of models/vit and models/clip. Outputs are dicts with Hugging Face field
// names; python/tessera/models/clip.py turns them into ModelOutput objects.
#include "bindings.h"
#include "tessera/models/clip/clip_model.h"
#include "tessera/python/module_binding.h"

#include <nlohmann/json.hpp>

namespace tessera::python {
namespace {

using models::PooledOutput;

py::dict pooled_to_dict(const PooledOutput& o) {
  py::dict d;
  d["last_hidden_state"] = o.last_hidden_state;
  d["pooler_output"] = o.pooler_output;
  if (!o.hidden_states.empty()) d["hidden_states"] = py::tuple(py::cast(o.hidden_states));
  return d;
}

at::Tensor opt(const std::optional<at::Tensor>& t) { return t ? *t : at::Tensor(); }

}  // namespace

void bind_clip(py::module_& m) {
  using namespace models;
  bind_module<VisionTransformerImpl>(m, "VisionTransformer")
      .def(py::init([](const std::string& cfg) {
             return std::make_shared<VisionTransformerImpl>(VisionTransformerOptions::from_json(nlohmann::json::parse(cfg)));
           }),
           py::arg("config_json"))
      .def(
          "forward",
          [](VisionTransformerImpl& self, const at::Tensor& pixel_values, bool output_hidden_states, bool interpolate) {
            PooledOutput o;
            {
              py::gil_scoped_release nogil;
              o = self.forward(pixel_values, output_hidden_states, interpolate);
            }
            return pooled_to_dict(o);
          },
          py::arg("pixel_values"), py::arg("output_hidden_states") = false, py::arg("interpolate_pos_encoding") = false)
      .def("set_gradient_checkpointing", &VisionTransformerImpl::set_gradient_checkpointing)
      .def("config_json", [](VisionTransformerImpl& self) { return self.options.to_json().dump(); });

  bind_module<ClipTextTransformerImpl>(m, "ClipTextTransformer")
      .def(py::init([](const std::string& cfg) {
             return std::make_shared<ClipTextTransformerImpl>(ClipTextOptions::from_json(nlohmann::json::parse(cfg)));
           }),
           py::arg("config_json"))
      .def(
          "forward",
          [](ClipTextTransformerImpl& self, const at::Tensor& input_ids, const std::optional<at::Tensor>& attention_mask,
             bool output_hidden_states) {
            PooledOutput o;
            {
              py::gil_scoped_release nogil;
              o = self.forward(input_ids, opt(attention_mask), output_hidden_states);
            }
            return pooled_to_dict(o);
          },
          py::arg("input_ids"), py::arg("attention_mask") = py::none(), py::arg("output_hidden_states") = false)
      .def("set_gradient_checkpointing", &ClipTextTransformerImpl::set_gradient_checkpointing)
      .def("config_json", [](ClipTextTransformerImpl& self) { return self.options.to_json().dump(); });

  bind_module<ClipModelImpl>(m, "ClipModel")
      .def(py::init([](const std::string& cfg) {
             return std::make_shared<ClipModelImpl>(ClipOptions::from_json(nlohmann::json::parse(cfg)));
           }),
           py::arg("config_json"))
      .def(
          "forward",
          [](ClipModelImpl& self, const at::Tensor& pixel_values, const at::Tensor& input_ids,
             const std::optional<at::Tensor>& attention_mask, bool return_loss, bool output_hidden_states,
             bool interpolate) {
            ClipOutput o;
            {
              py::gil_scoped_release nogil;
              o = self.forward(pixel_values, input_ids, opt(attention_mask), return_loss, output_hidden_states,
                               interpolate);
            }
            py::dict d;
            if (o.loss.defined()) d["loss"] = o.loss;
            d["logits_per_image"] = o.logits_per_image;
            d["logits_per_text"] = o.logits_per_text;
            d["text_embeds"] = o.text_embeds;
            d["image_embeds"] = o.image_embeds;
            d["text_model_output"] = pooled_to_dict(o.text_model_output);
            d["vision_model_output"] = pooled_to_dict(o.vision_model_output);
            return d;
          },
          py::arg("pixel_values"), py::arg("input_ids"), py::arg("attention_mask") = py::none(),
          py::arg("return_loss") = false, py::arg("output_hidden_states") = false,
          py::arg("interpolate_pos_encoding") = false)
      .def("get_image_features", &ClipModelImpl::get_image_features, py::arg("pixel_values"),
           py::arg("interpolate_pos_encoding") = false, py::call_guard<py::gil_scoped_release>())
      .def(
          "get_text_features",
          [](ClipModelImpl& self, const at::Tensor& ids, const std::optional<at::Tensor>& mask) {
            py::gil_scoped_release nogil;
            return self.get_text_features(ids, opt(mask));
          },
          py::arg("input_ids"), py::arg("attention_mask") = py::none())
      .def("set_gradient_checkpointing", &ClipModelImpl::set_gradient_checkpointing)
      .def("config_json", [](ClipModelImpl& self) { return self.options.to_json().dump(); });
}

}  // namespace tessera::python
