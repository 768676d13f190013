// A streaming reader of tar archives as webdataset and img2dataset write them (POSIX ustar; GNU
// long names, link targets and base-256 sizes; pax `path`, `size` and `linkpath` records), plain or
// gzip-compressed (.tar.gz, which webdataset opens transparently). It never trusts the archive: a
// bad header checksum, a size past the end of the file or over the limit, a member name that
// leaves its folder, a link, a sparse file, or corrupt gzip data ends or skips with a recorded
// problem, never a crash, a hang or a huge allocation. Memory is one member at a time.
//
//     TarReader tar("shard-00000.tar");
//     TarMember m;
//     while (tar.next(m)) use(m.name, m.data);
//     for (auto& p : tar.problems()) log(p);   // "shard-00000.tar: member 'x': ..."
#pragma once
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace tessera::data {

struct TarMember {
  std::string name;     ///< the member's path inside the archive
  std::string data;     ///< its bytes (empty with TarLimits::headers_only)
  int64_t offset = -1;  ///< where its bytes start in the file (a plain tar), else -1
  int64_t size = 0;     ///< how many there are
};

struct TarLimits {
  int64_t max_member_bytes = int64_t(1) << 30;  ///< a larger member is skipped and reported
  /// Members come without their bytes, which a plain tar seeks past (a resume replaying the
  /// samples before its position reads headers only; a gzip stream is still decompressed).
  bool headers_only = false;
};

class TarReader {
 public:
  /// Opens `path`; throws c10::ValueError when it cannot be opened.
  explicit TarReader(const std::string& path, TarLimits limits = {});
  ~TarReader();

  /// The next regular file member. Directories and pax/GNU records are consumed; links, devices
  /// and sparse files are skipped and reported. False at the end of the archive, or after a
  /// problem that makes the rest unreadable; a shard without its end-of-archive marker is
  /// reported as cut short.
  bool next(TarMember& out);

  /// What was skipped or cut short, each naming the archive and member.
  const std::vector<std::string>& problems() const { return problems_; }
  /// Regular members returned so far.
  int64_t members() const { return members_; }
  /// Whether the file is gzip-compressed.
  bool compressed() const { return compressed_; }

 private:
  /// Reads up to `n` bytes of the tar stream; fewer at its end. Corrupt gzip data records a
  /// problem and ends the archive.
  int64_t read(char* dst, int64_t n);
  bool read_block(char* block);
  /// Moves past `bytes`; past the end of the file it records a problem naming `member` and stops.
  bool skip(const std::string& member, int64_t bytes);
  /// Moves past the padding after a member of `size` bytes; a file that ends inside it is
  /// reported as cut after the member, which is whole.
  bool skip_padding(const std::string& member, int64_t size);
  /// Why the file cannot be a tar shard (empty, compressed other than by gzip, shorter than a
  /// header), or "".
  std::string not_a_tar(const unsigned char* head, int64_t got);
  void problem(const std::string& member, const std::string& what);
  /// Bytes left in the tar stream: known for a plain file, unbounded for gzip (there a lying size
  /// is caught by the member limit and by reading, which allocates only what arrives).
  int64_t remaining() const;
  /// "byte N" of the tar stream ("of the decompressed stream" for gzip).
  std::string at_byte(int64_t at) const;
  /// The offset of the first non-zero byte within 1 MiB after an end-of-archive marker, or -1.
  int64_t data_after_marker();

  std::string path_;
  TarLimits limits_;
  struct Inflater;  // zlib's inflate over `in_` (zlib.h stays out of the installed headers)
  std::ifstream in_;
  std::unique_ptr<Inflater> gz_;  // set for a gzip file
  bool compressed_ = false;
  int64_t file_size_ = 0;  // of a plain file; -1 for gzip
  int64_t pos_ = 0;        // bytes of the tar stream consumed
  int64_t members_ = 0;
  bool done_ = false;
  std::vector<std::string> problems_;
};

/// True when `name` is a relative path that stays in its folder (no "..", no leading "/").
bool tar_name_is_safe(const std::string& name);

}  // namespace tessera::data
