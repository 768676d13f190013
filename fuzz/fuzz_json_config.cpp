// Fuzzes config JSON as read from config.json and tessera's variant files: core::read_json_file
// (the input handed over as an in-memory file, memfd, no disk), core::ConfigReader's typed getters and json_excerpt (error messages),
// every family's Options::from_json (lenient, as for HF files) and the registry's strict
// validators (as for named variants and overrides). A config that reads must read again the
// same after options_to_json / to_json.
#include <sys/mman.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "fuzz_target.h"
#include "tessera/core/json_config.h"
#include "tessera/core/registry.h"
#include "tessera/models/beit/beit_options.h"
#include "tessera/models/clip/clip_options.h"
#include "tessera/models/llama/llama_options.h"
#include "tessera/models/llava/llava_options.h"
#include "tessera/models/mae/mae_options.h"

namespace {

using nlohmann::json;

// Each call on its own: one family's refusal must not hide another family's crash.
template <class F>
void each(F&& f) {
  try {
    f();
  } catch (const c10::Error&) {
  }
}

// Every typed getter on every key, and on children, two levels down.
void read_everything(const tessera::core::ConfigReader& r, int depth) {
  for (auto it = r.raw().begin(); it != r.raw().end(); ++it) {
    const std::string& key = it.key();
    each([&] { r.get_int(key, 0); });
    each([&] { r.get_double(key, 0.0); });
    each([&] { r.get_bool(key, false); });
    each([&] { r.get_string(key, ""); });
    if (depth > 0) each([&] { read_everything(r.child(key), depth - 1); });
  }
  each([&] { r.reject_unknown({"hidden_size", "text_config", "vision_config"}); });
}

// Reads `j` as Options (lenient, as an HF config.json); what reads must read back from to_json.
template <class Options>
void read_and_round_trip(const json& j) {
  Options o;
  try {
    o = Options::from_json(j);
  } catch (const c10::Error&) {
    return;
  }
  try {
    Options::from_json(o.to_json(), "round trip", /*strict=*/false);
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "%s\n", e.what_without_backtrace());
    tessera::fuzz::require(false, "to_json of a config that read does not read back");
  }
}

}  // namespace

TESSERA_FUZZ_TARGET(json_config) {
  static const int fd = memfd_create("tessera-fuzz-json", MFD_CLOEXEC);
  tessera::fuzz::require(fd >= 0 && ftruncate(fd, 0) == 0 && pwrite(fd, data, size, 0) == ssize_t(size),
                         "cannot write the memfd");
  const json j = tessera::core::read_json_file("/proc/self/fd/" + std::to_string(fd));
  (void)tessera::core::json_excerpt(j);
  each([&] { read_everything(tessera::core::ConfigReader(j, "fuzz config"), 2); });
  for (const std::string& family : tessera::core::list_families())
    each([&] { tessera::core::validate_config(family, j, "fuzz " + family + " config"); });
  using namespace tessera::models;
  read_and_round_trip<ClipOptions>(j);
  read_and_round_trip<ClipVisionOptions>(j);
  read_and_round_trip<ClipTextOptions>(j);
  read_and_round_trip<LlavaOptions>(j);
  read_and_round_trip<LlamaOptions>(j);
  read_and_round_trip<BeitOptions>(j);
  read_and_round_trip<MaeOptions>(j);
}
