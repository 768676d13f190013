// Helpers shared by the GoogleTest files: where the reference fixtures live.
#pragma once
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

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

/// f() must throw a c10::Error whose message contains `needle`.
template <class F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    FAIL() << "expected an error containing '" << needle << "'";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find(needle), std::string::npos) << e.what_without_backtrace();
  }
}
}  // namespace tessera::testing
