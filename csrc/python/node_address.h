// Bound functions that act on one mirrored node: Python passes the node's C++ address, which
// bind_module's `nodes()` reported (the root module, held by the Python tree, keeps it alive),
// and the function checks that the node is of the class it needs before using it.
#pragma once
#include "bindings.h"
#include "outputs.h"
#include "tessera/nn/encoder.h"

#include <torch/nn/module.h>

#include <cstdint>
#include <optional>
#include <variant>
#include <vector>

namespace tessera::python {

inline torch::nn::Module* node_at(uintptr_t address) { return reinterpret_cast<torch::nn::Module*>(address); }

/// The node at `address` as a `T`, or a TypeError saying it is not `what`.
template <class T>
T& node_as(uintptr_t address, const char* what) {
  auto* m = dynamic_cast<T*>(node_at(address));
  TORCH_CHECK_TYPE(m != nullptr, "this C++ module (", node_at(address)->name(), ") is not ", what);
  return *m;
}

/// timm's `indices` argument of forward_intermediates: None (every layer), an int n (the last n
/// layers) or a list of layer indices (negative from the end).
using FeatureIndices = std::optional<std::variant<int64_t, std::vector<int64_t>>>;

/// The list form of `indices` for an encoder of `num_layers` layers (a list is checked where it is
/// taken, nn::take_indices; both raise ValueError naming the bad index).
inline std::vector<int64_t> feature_indices(const FeatureIndices& indices, int64_t num_layers) {
  if (!indices) return nn::last_layers(num_layers, num_layers);
  if (const auto* n = std::get_if<int64_t>(&*indices)) return nn::last_layers(num_layers, *n);
  return std::get<std::vector<int64_t>>(*indices);
}

/// Binds `name`(node, pixel_values, indices, norm, stop_early, interpolate_pos_encoding): timm's
/// forward_intermediates on an image tower of class `Tower` wherever it sits in a tree (the
/// standalone model's root or a parent's tower), one code path for both.
template <class Tower>
void def_image_intermediates(py::module_& m, const char* name, const char* what) {
  m.def(
      name,
      [what](uintptr_t node, const at::Tensor& px, const FeatureIndices& indices, bool norm, bool stop_early,
             bool interpolate) {
        auto& self = node_as<Tower>(node, what);
        const auto take = feature_indices(indices, self.encoder->num_layers);
        return output_to_dict(
            without_gil([&] { return self.forward_intermediates(px, take, norm, stop_early, interpolate); }));
      },
      py::arg("node"), py::arg("pixel_values"), py::arg("indices") = py::none(), py::arg("norm") = false,
      py::arg("stop_early") = false, py::arg("interpolate_pos_encoding") = false);
}

/// Binds `name`(node, features): timm's forward_head pooling (`Tower::pool`) of forward_features'
/// tokens, on an image tower wherever it sits in a tree.
template <class Tower>
void def_image_head(py::module_& m, const char* name, const char* what) {
  m.def(
      name,
      [what](uintptr_t node, const at::Tensor& features) {
        auto& self = node_as<Tower>(node, what);
        return without_gil([&] { return self.pool(features); });
      },
      py::arg("node"), py::arg("features"));
}

}  // namespace tessera::python
