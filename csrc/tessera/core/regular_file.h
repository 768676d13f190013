// Every reader of a path named by someone else's file (a caption list, a shard list, a checkpoint
// folder) checks it first: opening a FIFO blocks until a writer comes, reading /dev/zero never
// ends, and a folder read as a file gave "basic_string::_M_create", naming nothing.
#pragma once
#include <string>

namespace tessera::core {

/// Refuses (ValueError) a path that exists but is not a regular file (links are followed),
/// naming it and `what` ("the tar file"). A missing path passes: its reader's own "cannot open"
/// names it.
void require_regular_file(const std::string& path, const std::string& what);

}  // namespace tessera::core
