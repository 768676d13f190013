// Helpers shared by the GoogleTest files: where the reference fixtures live.
#pragma once
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include <unistd.h>

namespace tessera::testing {
/// TempDir()/tessera_<pid>_<name>: two test runs at once (ctest beside the sanitizer build) must
/// not rewrite each other's files.
inline std::string temp_path(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) /
          ("tessera_" + std::to_string(::getpid()) + "_" + name)).string();
}

/// The ../shared folder next to the checkout (or $TESSERA_SHARED_DIR).
inline std::string shared_dir() {
  const char* env = std::getenv("TESSERA_SHARED_DIR");
  return env ? std::string(env) : std::string("../shared");
}
inline std::string fixture_dir(const std::string& family) {
  return shared_dir() + "/fixtures/hf/" + family;
}
/// `const std::string var` = the fixture folder of `family`; the test skips when it is missing, as
/// the Python tests do (a machine without ../shared, such as scripts/device_check.sh's).
#define TESSERA_FIXTURE_DIR_OR_SKIP(var, family)                                 \
  const std::string var = tessera::testing::fixture_dir(family);                 \
  if (!std::filesystem::is_directory(var)) GTEST_SKIP() << "fixture " << var << " not found (set TESSERA_SHARED_DIR)"

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
