// One harness source, two builds: TESSERA_FUZZ_TARGET(name) { ... } defines libFuzzer's
// LLVMFuzzerTestOneInput when built as a fuzzer (TESSERA_FUZZ_LIBFUZZER, clang), and otherwise
// registers the body under `name` for fuzz_replay (replay_main.cpp), which ctest runs on every
// file in fuzz/regressions/<name>/. Either way the body runs inside run_one: a c10::Error is the
// library refusing bad input (the contract), anything else escaping is a finding and aborts.
#pragma once
#include <c10/util/Exception.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

namespace tessera::fuzz {

using Body = void (*)(const uint8_t* data, size_t size);

inline int run_one(Body body, const uint8_t* data, size_t size) {
  try {
    body(data, size);
  } catch (const c10::Error&) {
    // A clear error is the expected answer to bad input.
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tessera fuzz: unexpected exception (not c10::Error): %s\n", e.what());
    std::abort();
  }
  return 0;
}

/// `relative` under the reference folder: $TESSERA_SHARED_DIR, else the path CMake compiled in.
inline std::string shared_file(const std::string& relative) {
  const char* env = std::getenv("TESSERA_SHARED_DIR");
  return std::string(env ? env : TESSERA_FUZZ_SHARED_DIR) + "/" + relative;
}

/// A finding that is no crash by itself (a broken invariant): report and abort, so libFuzzer
/// saves the input and ctest fails.
inline void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "tessera fuzz: invariant broken: %s\n", what);
    std::abort();
  }
}

bool register_target(const char* name, Body body);  // replay_main.cpp

}  // namespace tessera::fuzz

#ifdef TESSERA_FUZZ_LIBFUZZER
#define TESSERA_FUZZ_TARGET(name)                                                         \
  static void tessera_fuzz_body(const uint8_t* data, size_t size);                       \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {              \
    return tessera::fuzz::run_one(tessera_fuzz_body, data, size);                        \
  }                                                                                       \
  static void tessera_fuzz_body(const uint8_t* data, size_t size)
#else
#define TESSERA_FUZZ_TARGET(name)                                                         \
  static void tessera_fuzz_##name(const uint8_t* data, size_t size);                     \
  static const bool tessera_fuzz_registered_##name =                                      \
      tessera::fuzz::register_target(#name, tessera_fuzz_##name);                         \
  static void tessera_fuzz_##name(const uint8_t* data, size_t size)
#endif
