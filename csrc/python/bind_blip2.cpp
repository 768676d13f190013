// Python bindings of models/blip2 (Blip2VisionModel, Blip2QFormerModel,
// Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval).
#include "bindings.h"
#include "family_binding.h"
#include "generation_stream.h"
#include "node_address.h"
#include "outputs.h"
#include "tessera/models/blip2/blip2_model.h"
#include "tessera/models/blip2/stage1.h"

namespace tessera::python {
namespace {

template <class Options>
std::string resolved(const std::string& cfg) {
  return Options::from_json(nlohmann::json::parse(cfg), "config").to_json().dump();
}

}  // namespace

void bind_blip2(py::module_& m) {
  using namespace models;
  m.def("resolve_config", &resolved<Blip2Options>, py::arg("config_json"));
  m.def("resolve_qformer_config", &resolved<Blip2QFormerOptions>, py::arg("config_json"));
  m.def("resolve_vision_config", &resolved<Blip2VisionOptions>, py::arg("config_json"));

  m.def(
      "stage1_mask",
      [](const std::string& pass, int64_t num_queries, const at::Tensor& text_mask) {
        return stage1_mask(stage1_pass_from_name(pass), num_queries, text_mask);
      },
      py::arg("pass_name"), py::arg("num_queries"), py::arg("text_mask"),
      "[B, Q+T, Q+T] 0/1 mask of a stage-1 pass: 'itc', 'itm' or 'itg'.");

  bind_family_module<Blip2ForPretrainingImpl, Blip2Options>(m, "Blip2ForPretraining")
      .def(
          "itc_features",
          [](Blip2ForPretrainingImpl& self, const at::Tensor& image, const at::Tensor& ids, const at::Tensor& mask) {
            return without_gil([&] { return self.itc_features(image, ids, mask); });
          },
          py::arg("image_embeds"), py::arg("input_ids"), py::arg("attention_mask"))
      .def("itm_logits", &Blip2ForPretrainingImpl::itm_logits, py::arg("image_embeds"), py::arg("input_ids"),
           py::arg("attention_mask"), py::call_guard<py::gil_scoped_release>())
      .def(
          "lm_loss",
          [](Blip2ForPretrainingImpl& self, const at::Tensor& image, const at::Tensor& ids, const at::Tensor& mask,
             int64_t bos, double smoothing) {
            return without_gil([&] { return self.lm_loss(image, ids, mask, bos, smoothing); });
          },
          py::arg("image_embeds"), py::arg("input_ids"), py::arg("attention_mask"), py::arg("bos_token_id"),
          py::arg("label_smoothing") = 0.1)
      .def("itg_logits", &Blip2ForPretrainingImpl::itg_logits, py::arg("image_embeds"), py::arg("input_ids"),
           py::arg("attention_mask"), py::call_guard<py::gil_scoped_release>())
      .def("lm_logits", &Blip2ForPretrainingImpl::lm_logits, py::arg("states"),
           py::call_guard<py::gil_scoped_release>());

  bind_family_module<Blip2VisionModelImpl, Blip2VisionOptions>(m, "Blip2VisionModel")
      .def(
          "forward",
          [](Blip2VisionModelImpl& self, const at::Tensor& px, bool hidden, bool interpolate) {
            return output_to_dict(without_gil([&] { return self.forward(px, hidden, interpolate); }));
          },
          py::arg("pixel_values"), py::arg("output_hidden_states") = false, py::arg("interpolate_pos_encoding") = false);
  // timm's feature API on the tower wherever it sits (Blip2VisionModel's root, a parent's vision_model).
  def_image_intermediates<Blip2VisionModelImpl>(m, "vision_forward_intermediates", "a BLIP-2 vision tower");
  def_image_head<Blip2VisionModelImpl>(m, "vision_forward_head", "a BLIP-2 vision tower");

  bind_family_module<Blip2QFormerModelImpl, Blip2QFormerOptions>(m, "Blip2QFormerModel")
      .def(
          "forward",
          [](Blip2QFormerModelImpl& self, const at::Tensor& query_embeds, int64_t query_length,
             const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& image,
             const std::optional<at::Tensor>& image_mask, bool hidden) {
            return output_to_dict(without_gil(
                [&] { return self.forward(query_embeds, query_length, opt(mask), opt(image), opt(image_mask), hidden); }));
          },
          py::arg("query_embeds"), py::arg("query_length") = -1, py::arg("attention_mask") = py::none(),
          py::arg("encoder_hidden_states") = py::none(), py::arg("encoder_attention_mask") = py::none(),
          py::arg("output_hidden_states") = false);

  bind_family_module<Blip2ForConditionalGenerationImpl, Blip2Options>(m, "Blip2ForConditionalGeneration")
      .def(
          "forward",
          [](Blip2ForConditionalGenerationImpl& self, const at::Tensor& ids, const at::Tensor& px,
             const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& labels, bool hidden,
             bool interpolate) {
            return output_to_dict(
                without_gil([&] { return self.forward(ids, px, opt(mask), opt(labels), hidden, interpolate); }));
          },
          py::arg("input_ids"), py::arg("pixel_values"), py::arg("attention_mask") = py::none(),
          py::arg("labels") = py::none(), py::arg("output_hidden_states") = false,
          py::arg("interpolate_pos_encoding") = false)
      .def("image_features", &Blip2ForConditionalGenerationImpl::image_features, py::arg("pixel_values"),
           py::arg("interpolate_pos_encoding") = false, py::call_guard<py::gil_scoped_release>())
      .def(
          "generate",
          [](Blip2ForConditionalGenerationImpl& self, const at::Tensor& ids, const at::Tensor& px,
             const std::optional<at::Tensor>& mask, const GenerationOptions& options,
             std::optional<at::Generator> generator, bool interpolate) {
            return without_gil([&] { return self.generate(ids, px, opt(mask), options, generator, interpolate); });
          },
          py::arg("input_ids"), py::arg("pixel_values"), py::arg("attention_mask") = py::none(),
          py::arg("options") = GenerationOptions(), py::arg("generator") = py::none(),
          py::arg("interpolate_pos_encoding") = false)
      .def(
          "stream",
          [](Blip2ForConditionalGenerationImpl& self, const at::Tensor& ids, const at::Tensor& px,
             const std::optional<at::Tensor>& mask, const GenerationOptions& options,
             std::optional<at::Generator> generator, bool interpolate) {
            Stream s{self.language_model.ptr(), nullptr};
            at::Tensor embeds = without_gil([&] {
              at::NoGradGuard no_grad;
              return self.embed(ids, px, interpolate);
            });
            s.gen = std::make_unique<TextGeneration>(*s.model, ids, opt(mask), options, generator, embeds);
            return s;
          },
          py::arg("input_ids"), py::arg("pixel_values"), py::arg("attention_mask") = py::none(),
          py::arg("options") = GenerationOptions(), py::arg("generator") = py::none(),
          py::arg("interpolate_pos_encoding") = false);

  bind_family_module<Blip2ForImageTextRetrievalImpl, Blip2Options>(m, "Blip2ForImageTextRetrieval")
      .def(
          "forward",
          [](Blip2ForImageTextRetrievalImpl& self, const at::Tensor& px, const at::Tensor& ids,
             const std::optional<at::Tensor>& mask, bool itm) {
            return output_to_dict(without_gil([&] { return self.forward(px, ids, opt(mask), itm); }));
          },
          py::arg("pixel_values"), py::arg("input_ids"), py::arg("attention_mask") = py::none(),
          py::arg("use_image_text_matching_head") = false)
      .def("image_embeds_for_itc", &Blip2ForImageTextRetrievalImpl::image_embeds_for_itc, py::arg("pixel_values"),
           py::call_guard<py::gil_scoped_release>())
      .def(
          "text_embeds_for_itc",
          [](Blip2ForImageTextRetrievalImpl& self, const at::Tensor& ids, const std::optional<at::Tensor>& mask) {
            return without_gil([&] { return self.text_embeds_for_itc(ids, opt(mask)); });
          },
          py::arg("input_ids"), py::arg("attention_mask") = py::none());
}

namespace {
// After llama (11 > 10): generate's default argument is LLaMA's bound GenerationOptions.
const bool registered = register_submodule(
    "blip2", "BLIP-2 (Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval) and its Q-Former", &bind_blip2, 11);
}  // namespace

}  // namespace tessera::python
