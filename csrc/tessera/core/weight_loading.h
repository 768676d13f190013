// How a checkpoint's keys map onto a module's: the rules transformers keeps on each model class
// (key renames for older layouts, tied weights, a part loading from its parent's folder, a base
// model from its task model's). Each family declares its rules once, here in C++, under the
// module's name; the C++ loader and the Python classes (tessera.models) both read them.
#pragma once
#include "tessera/core/safetensors.h"

#include <nlohmann/json_fwd.hpp>

#include <set>
#include <typeindex>
#include <typeinfo>
#include <string>
#include <utility>
#include <vector>

namespace torch::nn {
class Module;
}

namespace tessera::core {

struct WeightLoading {
  /// Keys ending in one of these are dropped (buffers older transformers versions saved).
  std::vector<std::string> ignore_suffixes{".position_ids"};
  /// (regex, replacement): a key the module lacks is renamed by the first alias that turns it into
  /// one it has (other layouts of the same weights: `^vision_model\.` -> "" for a tower). The
  /// replacement is plain text: C++'s `$1` and Python's `\1` would read a group differently.
  std::vector<std::pair<std::string, std::string>> key_aliases;
  /// Tied key -> its source, copied when the checkpoint omits it (`lm_head.weight` from the embeddings).
  std::vector<std::pair<std::string, std::string>> tied_weights;
  /// A part that loads from its parent's folder, as in transformers (CLIPVisionModel from a CLIP
  /// folder): when the folder's config.json has this key, the part's config is that entry and
  /// the parent's other weights are ignored.
  std::string base_config_key;
  /// transformers' base_model_prefix: a task model's checkpoint (`vit.*` and `decoder.*`) loads
  /// into the base model as its keys under the prefix.
  std::string base_model_prefix;
  /// Drop keys the module does not have; every key of the module must still be present.
  bool ignore_unexpected = false;

  /// A part stored as `prefix.*` in its parent's checkpoint, its config the parent's `config_key`.
  static WeightLoading part(const std::string& prefix, const std::string& config_key);
  /// A base model stored as `prefix.*` in its task model's checkpoint.
  static WeightLoading base_model(const std::string& prefix);
};

/// Declares the rules of the module class `Impl`, whose instances are named `module_name` (the
/// transformers class, "CLIPVisionTransformer": what Python classes find the rules by). The C++
/// loader finds them by the module's class, so another module that happens to share the name
/// is not affected. A family's *_family.cpp calls it from a static initialiser, where a throw
/// would end the process (or the Python interpreter importing an extension) before anyone could
/// catch it; so it never throws: a problem (a name or class declared twice, an empty name, a
/// pattern that is no regular expression, a replacement that is not plain text) is kept and
/// raised where the rules are read. Returns whether the rules were taken.
bool register_weight_loading(std::type_index module_class, const std::string& module_name, WeightLoading how);
template <class Impl>
bool register_weight_loading(const std::string& module_name, WeightLoading how) {
  return register_weight_loading(std::type_index(typeid(Impl)), module_name, std::move(how));
}
/// The rules declared under `module_name`, or the defaults; a ValueError for rules that were
/// refused (register_weight_loading).
WeightLoading weight_loading(const std::string& module_name);
/// The rules declared for `module`'s class, or the defaults.
WeightLoading weight_loading(const torch::nn::Module& module);
/// Names with declared (or refused) rules, sorted.
std::vector<std::string> list_weight_loading();

/// The checkpoint's tensors under the module's keys (`own`) after `how`: suffixes dropped, aliases
/// and the base-model prefix applied, tied keys filled, and, for a part in its parent's folder
/// (`config` holds base_config_key), the parent's other keys dropped. `where` names the folder.
TensorDict rename_for_module(TensorDict tensors, const std::set<std::string>& own, const WeightLoading& how,
                             const nlohmann::json& config, const std::string& where);

}  // namespace tessera::core
