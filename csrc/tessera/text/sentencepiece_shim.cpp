// Opens libtessera_sentencepiece (text/sentencepiece_shim.h says why it is a library of its own).
#include "tessera/text/sentencepiece_shim.h"

#include <c10/util/Exception.h>
#include <dlfcn.h>

#include <cstdlib>

namespace tessera::text::spm_shim {
namespace {

/// Why RTLD_DEEPBIND must not be used here, or "" when it may. A sanitizer runtime refuses it; a
/// preloaded allocator (tcmalloc, jemalloc) must see every malloc, and a deep-bound library would
/// bind glibc's first.
std::string deep_bind_unsafe() {
  for (const char* runtime : {"__asan_init", "__tsan_init", "__msan_init"}) {
    if (dlsym(RTLD_DEFAULT, runtime)) return "a sanitizer runtime is loaded";
  }
  const char* preload = std::getenv("LD_PRELOAD");
  if (preload && *preload) return "LD_PRELOAD is set";
  return "";
}

std::string own_folder() {
  Dl_info info{};
  TORCH_CHECK(dladdr(reinterpret_cast<void*>(&api), &info) && info.dli_fname,
              "SentencePiece: cannot find libtessera's own file to load its shim beside it");
  const std::string self = info.dli_fname;
  const auto slash = self.rfind('/');
  return slash == std::string::npos ? "." : self.substr(0, slash);
}

const Api* open_shim() {
  const std::string path = own_folder() + "/libtessera_sentencepiece.so";
  int mode = RTLD_NOW | RTLD_LOCAL;
  const std::string unsafe = deep_bind_unsafe();
  if (unsafe.empty()) {
    mode |= RTLD_DEEPBIND;
  } else {
    TORCH_WARN("SentencePiece is loaded without RTLD_DEEPBIND (", unsafe,
               "): its absl flags bind to c10's, and a failed c10 check, an out-of-memory error "
               "among them, may then abort the process instead of throwing (docs/design.md)");
  }
  void* handle = dlopen(path.c_str(), mode);
  TORCH_CHECK(handle, "SentencePiece: cannot load ", path, ": ", dlerror());
  using Entry = const Api* (*)();
  auto entry = reinterpret_cast<Entry>(dlsym(handle, "tessera_sentencepiece_api"));
  TORCH_CHECK(entry, "SentencePiece: ", path, " has no tessera_sentencepiece_api");
  const Api* loaded = entry();
  TORCH_CHECK(loaded && loaded->version == kVersion, "SentencePiece: ", path,
              " is from another tessera build (shim version ", loaded ? loaded->version : -1,
              ", expected ", kVersion, ")");
  return loaded;
}

}  // namespace

const Api& api() {
  static const Api* loaded = open_shim();  // a throw leaves it unset: the next call tries again
  return *loaded;
}

}  // namespace tessera::text::spm_shim
