#include "tessera/core/regular_file.h"

#include <c10/util/Exception.h>
#include <sys/stat.h>

namespace tessera::core {

void require_regular_file(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return;
  const char* kind = S_ISDIR(st.st_mode) ? "a folder" : S_ISFIFO(st.st_mode) ? "a FIFO"
                     : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : S_ISSOCK(st.st_mode) ? "a socket"
                     : nullptr;
  TORCH_CHECK_VALUE(S_ISREG(st.st_mode), path, ": ", kind ? kind : "not a regular file", ", not a regular file (",
                    what, " was expected here)");
}

}  // namespace tessera::core
