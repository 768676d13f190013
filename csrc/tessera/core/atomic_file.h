// Crash-safe file writes: write a temp file next to the target, fsync it, rename over the target,
// fsync the folder. A reader sees the old file or the new one, never a torn one.
#pragma once
#include <string>
#include <string_view>

namespace tessera::core {

/// Writes `bytes` to `path` atomically (temp file + fsync + rename).
/// Example: `write_file_atomic("out/config.json", json.dump(2));`
void write_file_atomic(const std::string& path, std::string_view bytes);

/// Reads a whole file; the error names the path and the OS reason.
std::string read_file(const std::string& path);

/// Creates `dir` and its parents if missing.
void make_dirs(const std::string& dir);

}  // namespace tessera::core
