// Helpers shared by the GoogleTest files: where the reference fixtures live.
#pragma once
#include <cstdlib>
#include <string>

namespace tessera::testing {
/// The ../shared folder next to the checkout (or $TESSERA_SHARED_DIR).
inline std::string shared_dir() {
  const char* env = std::getenv("TESSERA_SHARED_DIR");
  return env ? std::string(env) : std::string("../shared");
}
inline std::string fixture_dir(const std::string& family) {
  return shared_dir() + "/fixtures/hf/" + family;
}
}  // namespace tessera::testing
