// Python bindings of csrc/tessera/core: safetensors I/O, atomic writes, the config registry, the
// weight-loading rules.
#include "bindings.h"
#include "tessera/core/atomic_file.h"
#include "tessera/core/json_config.h"
#include "tessera/core/registry.h"
#include "tessera/core/safetensors.h"
#include "tessera/core/weight_loading.h"

#include <nlohmann/json.hpp>

namespace tessera::python {

void bind_core(py::module_& m) {
  m.def(
      "load_safetensors",
      [](const std::string& path) {
        core::Metadata meta;
        auto tensors = core::load_safetensors(path, &meta);
        return std::make_pair(tensors, meta);
      },
      py::arg("path"), "Validated, memory-mapped read: ({name: tensor}, metadata).");
  m.def("save_safetensors", &core::save_safetensors, py::arg("path"), py::arg("tensors"),
        py::arg("metadata") = core::Metadata{}, "Atomic write (temp file, fsync, rename).",
        py::call_guard<py::gil_scoped_release>());
  m.def("load_checkpoint_dir", &core::load_checkpoint_dir, py::arg("dir"),
        "model.safetensors or the shards of model.safetensors.index.json.");
  m.def(
      "write_file_atomic", [](const std::string& path, const py::bytes& data) {
        core::write_file_atomic(path, std::string(data));
      },
      py::arg("path"), py::arg("data"));
  m.def("list_configs", &core::list_configs);
  m.def("load_config_dir", &core::load_config_dir, py::arg("root"),
        "Registers every <root>/<family>/configs/<name>.json; returns the names.");
  m.def("load_config_file", &core::load_config_file, py::arg("path"), py::arg("family"),
        "Checks one variant file with the family's validator and registers it under its stem.");
  m.def("load_config_files", &core::load_config_files, py::arg("files"),
        "Registers (path, family) variant files all or none; returns their names.");
  m.def("list_families", &core::list_families);
  m.def(
      "validate_config",
      [](const std::string& family, const std::string& config, const std::string& where) {
        core::validate_config(family, nlohmann::json::parse(config), where);
      },
      py::arg("family"), py::arg("config_json"), py::arg("where"),
      "Checks a config of `family` strictly (unknown keys rejected, valid keys listed).");
  m.def(
      "find_config",
      [](const std::string& name) {
        const auto& c = core::find_config(name);
        return std::make_pair(c.family, c.json);
      },
      py::arg("name"));
  m.def(
      "weight_loading",
      [](const std::string& module_name) {
        const auto w = core::weight_loading(module_name);
        py::dict out;
        out["ignore_suffixes"] = w.ignore_suffixes;
        out["key_aliases"] = w.key_aliases;
        py::dict tied;
        for (const auto& [target, source] : w.tied_weights) tied[py::str(target)] = source;
        out["tied_weights"] = tied;
        out["base_config_key"] = w.base_config_key;
        out["base_model_prefix"] = w.base_model_prefix;
        return out;
      },
      py::arg("module_name"),
      "The weight-loading rules a family declared for a C++ module name (defaults if none).");
  m.def("transformers_file_keys", &core::transformers_file_keys,
        "Keys transformers writes into config.json that tessera does not read; strict reads let them pass.");
  m.def("attribute_aliases", &core::attribute_aliases,
        "transformers' attribute_map entries tessera reads: [(alias, key)], e.g. image_token_id.");
  m.def("list_weight_loading", &core::list_weight_loading, "Module names with declared weight-loading rules.");
}

namespace {
const bool registered = register_submodule("core", "safetensors, configs, registry", &bind_core, 0);
}  // namespace

}  // namespace tessera::python
