// JSON configuration helpers (nlohmann-json): typed reads whose errors name the file and key.
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <string>
#include <utility>
#include <vector>

namespace tessera::core {

using nlohmann::json;

/// Parses a JSON file; a syntax error names the file and the byte offset.
json read_json_file(const std::string& path);

/// Writes `j` (indented, sorted keys) atomically.
void write_json_file(const std::string& path, const json& j);

/// `v` for an error message: its JSON text, cut to `max_chars`, or a summary such as "an array
/// nested more than 16 levels deep". Never `v.dump()` on untrusted data in a message: dump
/// recurses once per level, and a file of a million '[' overflows the stack.
///
///     json_excerpt(json::parse("[1, 2]"))  // "[1,2]"
std::string json_excerpt(const json& v, size_t max_chars = 200);

/// Keys transformers writes into config.json that tessera does not read: PretrainedConfig's own
/// (dtype, transformers_version, use_cache, ...), generation settings of older files, and those of
/// heads and variants tessera does not build (a tower's projection_dim, BEiT's segmentation
/// head). A strict read (`reject_unknown`) lets them pass, so a saved config.json is a valid
/// variant file; only names are judged, never values.
const std::vector<std::string>& transformers_file_keys();

/// transformers' `attribute_map` entries (alias -> key) that tessera honours: LlavaConfig's and
/// Blip2Config's `image_token_id` is their `image_token_index`.
const std::vector<std::pair<std::string, std::string>>& attribute_aliases();
/// `j` with each alias it holds renamed to its key, as transformers' configs read them; both
/// present with different values is an error naming the two.
json with_attribute_aliases(const json& j, const std::string& where);

/// Reads JSON config values with errors that say where: "clip config: text_config.hidden_size
/// must be an integer, got "abc"". Unknown-key checking is opt-in via `reject_unknown`.
/// The constructor refuses a value that is not an object or nests deeper than 32 levels (no
/// config does; copying or printing a deeper one recurses per level and can overflow the stack).
class ConfigReader {
 public:
  ConfigReader(const json& j, std::string where);
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_double(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  /// An integer or a list of integers (HF's `eos_token_id`, `vision_feature_layer`), as a list.
  std::vector<int64_t> get_int_list(const std::string& key, const std::vector<int64_t>& fallback) const;
  bool has(const std::string& key) const;
  ConfigReader child(const std::string& key) const;  // missing child = empty object
  /// Fails if `j` has keys outside `known` and transformers_file_keys() (used for tessera's own
  /// variant files and overrides).
  void reject_unknown(const std::vector<std::string>& known) const;
  const json& raw() const { return *j_; }
  const std::string& where() const { return where_; }

 private:
  const json* j_;
  std::string where_;
};

}  // namespace tessera::core
