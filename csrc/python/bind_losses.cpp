// Python bindings of csrc/tessera/losses (CLIP InfoNCE, SigLIP). Only the math crosses here;
// the nn.Modules, label cache and torch.distributed gathering live in python/tessera/losses.
// Results are dicts of named terms, like the model outputs in bind_clip.cpp.
#include "bindings.h"
#include "tessera/losses/clip_loss.h"
#include "tessera/losses/siglip_loss.h"

#include <optional>

namespace tessera::python {
namespace {

at::Tensor or_undefined(const std::optional<at::Tensor>& t) { return t ? *t : at::Tensor(); }

}  // namespace

void bind_losses(py::module_& m) {
  m.def(
      "clip_loss",
      [](const at::Tensor& image_features, const at::Tensor& text_features, const at::Tensor& logit_scale,
         const std::optional<at::Tensor>& all_image_features, const std::optional<at::Tensor>& all_text_features,
         bool local_loss, int64_t rank, const std::optional<at::Tensor>& logit_bias,
         const std::optional<at::Tensor>& labels) {
        losses::ClipLossOutput o;
        {
          py::gil_scoped_release nogil;
          o = losses::clip_loss(image_features, text_features, logit_scale, or_undefined(all_image_features),
                                or_undefined(all_text_features),
                                losses::ClipLossOptions().local_loss(local_loss).rank(rank), or_undefined(logit_bias),
                                or_undefined(labels));
        }
        py::dict d;
        d["contrastive_loss"] = o.contrastive_loss;
        d["logits_per_image"] = o.logits_per_image;
        d["logits_per_text"] = o.logits_per_text;
        return d;
      },
      py::arg("image_features"), py::arg("text_features"), py::arg("logit_scale"),
      py::arg("all_image_features") = py::none(), py::arg("all_text_features") = py::none(),
      py::arg("local_loss") = false, py::arg("rank") = 0, py::arg("logit_bias") = py::none(),
      py::arg("labels") = py::none(),
      "Symmetric InfoNCE with open_clip's semantics; logit_scale already exponentiated. "
      "-> {contrastive_loss, logits_per_image, logits_per_text}");
  m.def("clip_loss_labels", &losses::clip_loss_labels, py::arg("num_rows"), py::arg("local_loss"), py::arg("rank"),
        py::arg("device"), "arange(num_rows), offset by rank * num_rows when local_loss.");
  m.def("clamp_logit_scale", &losses::clamp_logit_scale, py::arg("log_scale"), py::arg("max_scale") = 100.0,
        "In place, without autograd: clamp the log-scale parameter to [0, ln(max_scale)] (open_clip, after "
        "optimizer.step()).");
  m.def(
      "siglip_loss",
      [](const at::Tensor& image_features, const at::Tensor& text_features, const at::Tensor& logit_scale,
         const std::optional<at::Tensor>& logit_bias, const std::optional<at::Tensor>& all_text_features,
         int64_t rank) {
        losses::SigLipLossOutput o;
        {
          py::gil_scoped_release nogil;
          o = losses::siglip_loss(image_features, text_features, logit_scale, or_undefined(logit_bias),
                                  or_undefined(all_text_features), rank);
        }
        py::dict d;
        d["contrastive_loss"] = o.contrastive_loss;
        d["logits"] = o.logits;
        return d;
      },
      py::arg("image_features"), py::arg("text_features"), py::arg("logit_scale"), py::arg("logit_bias") = py::none(),
      py::arg("all_text_features") = py::none(), py::arg("rank") = 0,
      "Pairwise sigmoid loss, summed and divided by the local batch (open_clip). -> {contrastive_loss, logits}");
}

namespace {
const bool registered = register_submodule("losses", "CLIP InfoNCE and SigLIP sigmoid losses (math; gathering in Python)", &bind_losses, 20);
}  // namespace

}  // namespace tessera::python
