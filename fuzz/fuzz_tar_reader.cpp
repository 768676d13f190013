// Fuzzes the tar reader (data/tar_reader.cpp) as webdataset shards feed it: the input is written
// to a file and read member by member. Every member returned must have a safe name and no more
// bytes than the limit; the reader must stop (a hostile size field never makes it allocate or
// seek past the file). Inputs that start with gzip's magic go through zlib, whose output can be
// ~1032 times its input (deflate's limit): the member bound grows by that factor. A plain tar read
// with headers_only (a resume's replay) gives the same members, each at its offset in the input.
#include "fuzz_target.h"
#include "tessera/data/tar_reader.h"

#include <unistd.h>

#include <cstring>
#include <fstream>
#include <vector>

TESSERA_FUZZ_TARGET(tar_reader) {
  const std::string path = "/tmp/tessera_fuzz_tar_" + std::to_string(getpid()) + ".tar";
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  tessera::data::TarLimits limits;
  limits.max_member_bytes = 1 << 16;
  tessera::data::TarReader reader(path, limits);
  tessera::data::TarMember member;
  int64_t read = 0;
  const int64_t stream_bytes = reader.compressed() ? 1032 * static_cast<int64_t>(size) : static_cast<int64_t>(size);
  std::vector<tessera::data::TarMember> whole;
  while (reader.next(member)) {
    tessera::fuzz::require(tessera::data::tar_name_is_safe(member.name), "a member with an unsafe name");
    tessera::fuzz::require(static_cast<int64_t>(member.data.size()) <= limits.max_member_bytes, "an oversized member");
    tessera::fuzz::require(++read <= stream_bytes / 512 + 1, "more members than blocks");
    if (!reader.compressed()) whole.push_back(member);
  }
  if (!reader.compressed()) {
    limits.headers_only = true;
    tessera::data::TarReader headers(path, limits);
    size_t i = 0;
    while (headers.next(member)) {
      tessera::fuzz::require(i < whole.size() && member.name == whole[i].name, "headers_only: another member");
      const auto& want = whole[i++].data;
      tessera::fuzz::require(member.data.empty() && member.size == static_cast<int64_t>(want.size()) &&
                                 member.offset >= 0 && member.offset + member.size <= static_cast<int64_t>(size) &&
                                 std::memcmp(want.data(), data + member.offset, want.size()) == 0,
                             "headers_only: a member's offset does not hold its bytes");
    }
    tessera::fuzz::require(i == whole.size(), "headers_only: fewer members");
  }
  std::remove(path.c_str());
}
