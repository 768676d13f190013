#include "tessera/data/tar_reader.h"
#include "tessera/core/regular_file.h"

#include "tessera/text/utf8.h"

#include <c10/util/Exception.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <fstream>

namespace tessera::data {
namespace {

constexpr int64_t kBlock = 512;

int64_t padded(int64_t n) { return (n + kBlock - 1) / kBlock * kBlock; }

/// A numeric header field: octal ASCII (spaces/NULs around it), or GNU base-256 when the first
/// byte's high bit is set. -1 when malformed or too large for int64.
int64_t header_number(const char* field, size_t len) {
  const auto* u = reinterpret_cast<const unsigned char*>(field);
  if (u[0] & 0x80) {
    if (u[0] != 0x80) return -1;  // negative or over 2^63
    int64_t v = 0;
    for (size_t i = 1; i < len; ++i) {
      if (v > (INT64_MAX >> 8)) return -1;
      v = (v << 8) | u[i];
    }
    return v;
  }
  size_t i = 0;
  while (i < len && (field[i] == ' ' || field[i] == '\0')) ++i;
  int64_t v = 0;
  bool any = false;
  for (; i < len && field[i] >= '0' && field[i] <= '7'; ++i) {
    if (v > (INT64_MAX >> 3)) return -1;
    v = v * 8 + (field[i] - '0');
    any = true;
  }
  for (; i < len; ++i)
    if (field[i] != ' ' && field[i] != '\0') return -1;
  return any ? v : 0;
}

std::string header_string(const char* field, size_t len) { return std::string(field, strnlen(field, len)); }

bool checksum_ok(const char* block) {
  // Over unsigned bytes as POSIX says, or signed as old Sun and BSD tars summed them (tarfile and
  // GNU tar accept both; they differ only where a name has bytes >= 0x80).
  const int64_t stored = header_number(block + 148, 8);
  int64_t sum = 0, signed_sum = 0;
  for (int i = 0; i < kBlock; ++i) {
    const bool field = i >= 148 && i < 156;
    sum += field ? ' ' : static_cast<unsigned char>(block[i]);
    signed_sum += field ? ' ' : static_cast<signed char>(block[i]);
  }
  return stored == sum || stored == signed_sum;
}

/// What a pax extended header ("LEN key=value\n" records) says of the next member.
struct PaxRecords {
  std::string path;
  std::string linkpath;         ///< a link's target, when the header's 100 bytes cannot hold it
  int64_t size = -1;            ///< -1: not given; a malformed value is -2
  std::string sparse_name;      ///< GNU.sparse.name: the real name of a sparse member
  bool sparse = false;          ///< any GNU.sparse.* record (tar --sparse in pax formats)
};

void parse_pax(const std::string& body, PaxRecords& pax) {
  size_t pos = 0;
  while (pos < body.size()) {
    const size_t space = body.find(' ', pos);
    if (space == std::string::npos) return;
    int64_t len = 0;
    for (size_t i = pos; i < space; ++i) {
      if (body[i] < '0' || body[i] > '9' || len > (int64_t(1) << 40)) return;
      len = len * 10 + (body[i] - '0');
    }
    if (len <= 0 || pos + static_cast<size_t>(len) > body.size()) return;
    const std::string record = body.substr(space + 1, pos + len - space - 2);  // without the '\n'
    const size_t eq = record.find('=');
    if (eq != std::string::npos) {
      const std::string key = record.substr(0, eq), value = record.substr(eq + 1);
      if (key == "path") pax.path = value;
      if (key == "linkpath") pax.linkpath = value;
      if (key == "size") {
        int64_t v = 0;
        bool ok = !value.empty() && value.size() < 19;  // 18 digits cannot overflow int64
        for (char c : value) {
          ok = ok && c >= '0' && c <= '9';
          if (ok) v = v * 10 + (c - '0');
        }
        pax.size = ok ? v : -2;
      }
      if (key.rfind("GNU.sparse.", 0) == 0) pax.sparse = true;
      if (key == "GNU.sparse.name") pax.sparse_name = value;
    }
    pos += len;
  }
}

/// Why a member of this type holds nothing to read, for the types that are reported; "" for the
/// ones that are consumed without a word (directories, global pax headers, volume labels and GNU
/// dump directories).
std::string not_a_file(char type, const std::string& link) {
  switch (type) {
    case '5': case 'g': case 'V': case 'D': return "";
    case '1': return "a hard link to '" + link + "', not read (tar --hard-dereference stores the file itself)";
    case '2': return "a symbolic link to '" + link + "', not followed";
    case '3': case '4': return "a device entry, not read";
    case '6': return "a FIFO entry, not read";
    case 'S': return "a sparse file (written by tar --sparse), not read: write shards without --sparse";
    default: return std::string("an entry of unknown type '") + type + "', not read";
  }
}

}  // namespace

bool tar_name_is_safe(const std::string& name) {
  if (name.empty() || name[0] == '/') return false;
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    if (name.compare(start, end - start, "..") == 0 && end - start == 2) return false;
    start = end + 1;
  }
  return true;
}

// gzip through zlib's inflate, not gzread: gzread drops what it decompressed in a call that then
// meets damage (up to its buffer, ~256 KiB of whole members), where this hands out every byte
// before the damage. Concatenated gzip members read as one stream, as `gzip -d` reads them;
// bytes after a member that do not start another end the stream.
struct TarReader::Inflater {
  z_stream strm{};
  std::vector<unsigned char> in = std::vector<unsigned char>(size_t(1) << 16);
  bool ended = false;
  std::string error;  // why the data stopped short (damage, or the file's end)

  Inflater() { TORCH_CHECK(inflateInit2(&strm, 15 + 16) == Z_OK, "zlib: cannot start a gzip decoder"); }
  ~Inflater() { inflateEnd(&strm); }

  bool refill(std::ifstream& file) {
    if (strm.avail_in > 0) std::memmove(in.data(), strm.next_in, strm.avail_in);
    file.read(reinterpret_cast<char*>(in.data()) + strm.avail_in,
              static_cast<std::streamsize>(in.size() - strm.avail_in));
    const auto got = static_cast<uInt>(file.gcount());
    strm.next_in = in.data();
    strm.avail_in += got;
    return got > 0;
  }

  int64_t read(std::ifstream& file, char* dst, int64_t n) {
    int64_t total = 0;
    while (total < n && !ended && error.empty()) {
      if (strm.avail_in == 0 && !refill(file)) {
        error = "the file ends inside the gzip data";
        break;
      }
      const auto want = static_cast<uInt>(std::min<int64_t>(n - total, int64_t(1) << 30));
      strm.next_out = reinterpret_cast<Bytef*>(dst + total);
      strm.avail_out = want;
      const int ret = inflate(&strm, Z_NO_FLUSH);
      total += want - strm.avail_out;
      if (ret == Z_STREAM_END) {
        if (strm.avail_in < 2) refill(file);
        if (strm.avail_in >= 2 && strm.next_in[0] == 0x1f && strm.next_in[1] == 0x8b) {
          inflateReset(&strm);
        } else {
          ended = true;
        }
      } else if (ret != Z_OK && ret != Z_BUF_ERROR) {
        error = std::string("zlib: ") + (strm.msg ? strm.msg : "error " + std::to_string(ret));
      }
    }
    return total;
  }
};

TarReader::~TarReader() = default;

TarReader::TarReader(const std::string& path, TarLimits limits) : path_(path), limits_(limits) {
  core::require_regular_file(path, "a tar shard");
  in_.open(path, std::ios::binary | std::ios::ate);
  TORCH_CHECK_VALUE(in_.good(), path, ": cannot open the tar file");
  file_size_ = static_cast<int64_t>(in_.tellg());
  in_.seekg(0);
  unsigned char head[6] = {0, 0, 0, 0, 0, 0};
  in_.read(reinterpret_cast<char*>(head), sizeof(head));
  const int64_t got = in_.gcount();
  in_.clear();
  in_.seekg(0);
  compressed_ = got >= 2 && head[0] == 0x1f && head[1] == 0x8b;
  if (const std::string what = not_a_tar(head, got); !what.empty()) {
    problem("", what);
    done_ = true;
    return;
  }
  if (compressed_) {
    gz_ = std::make_unique<Inflater>();
    file_size_ = -1;
  }
}

void TarReader::problem(const std::string& member, const std::string& what) {
  // A name that is not UTF-8 is shown with U+FFFD: the message itself must reach Python.
  problems_.push_back(path_ + (member.empty() ? "" : ": member '" + text::utf8::sanitize(member) + "'") + ": " +
                      what);
}

std::string TarReader::not_a_tar(const unsigned char* head, int64_t got) {
  if (file_size_ == 0) return "an empty file (0 bytes), not a tar shard";
  const auto starts = [&](std::initializer_list<unsigned char> magic) {
    return got >= static_cast<int64_t>(magic.size()) && std::equal(magic.begin(), magic.end(), head);
  };
  const char* compression = starts({'B', 'Z', 'h'})                    ? "bzip2"
                            : starts({0xfd, '7', 'z', 'X', 'Z', 0x00}) ? "xz"
                            : starts({0x28, 0xb5, 0x2f, 0xfd})         ? "zstd"
                                                                       : nullptr;
  if (compression)
    return std::string("compressed with ") + compression + "; tessera reads plain and gzip-compressed tar shards " +
           "(recompress it with gzip, or write shards without compression)";
  if (!compressed_ && file_size_ < kBlock)
    return "not a tar file (" + std::to_string(file_size_) + " bytes, shorter than one 512-byte header)";
  return "";
}

int64_t TarReader::remaining() const { return file_size_ < 0 ? INT64_MAX : file_size_ - pos_; }

std::string TarReader::at_byte(int64_t at) const {
  return "byte " + std::to_string(at) + (compressed_ ? " of the decompressed stream" : "");
}

int64_t TarReader::read(char* dst, int64_t n) {
  int64_t total = 0;
  if (gz_) {
    total = gz_->read(in_, dst, n);
    if (!gz_->error.empty() && !done_) {
      problem("", "corrupt or truncated gzip data at " + at_byte(pos_ + total) + " after " +
                      std::to_string(members_) + " members (" + gz_->error + "); the rest is not read");
      done_ = true;
    }
  } else {
    in_.read(dst, static_cast<std::streamsize>(n));
    total = in_.gcount();
  }
  pos_ += total;
  return total;
}

int64_t TarReader::data_after_marker() {
  const int64_t marker_end = pos_;
  constexpr int64_t kLook = int64_t(1) << 20;  // a damaged header or a joined tar shows at once
  std::string rest(static_cast<size_t>(std::max<int64_t>(0, std::min(kLook, remaining()))), '\0');
  rest.resize(static_cast<size_t>(read(rest.data(), static_cast<int64_t>(rest.size()))));
  const auto it = std::find_if(rest.begin(), rest.end(), [](char c) { return c != 0; });
  return it == rest.end() ? -1 : marker_end + (it - rest.begin());
}

bool TarReader::read_block(char* block) { return read(block, kBlock) == kBlock; }

bool TarReader::skip(const std::string& member, int64_t bytes) {
  const int64_t at = pos_;
  if (bytes >= 0 && bytes <= remaining()) {
    if (!gz_) {  // a plain file is seeked
      in_.seekg(bytes, std::ios::cur);
      if (in_.good()) {
        pos_ += bytes;
        return true;
      }
    } else {  // gzip is read through; its end shows as a short read
      char scratch[1 << 14];
      int64_t left = bytes;
      while (left > 0) {
        const int64_t got = read(scratch, std::min<int64_t>(left, sizeof(scratch)));
        if (got <= 0) break;
        left -= got;
      }
      if (left == 0) return true;
      if (done_) return false;  // corrupt data, already reported
    }
  }
  problem(member, "truncated: " + std::to_string(bytes) + " bytes to skip at " + at_byte(at) +
                      " run past the end of the file; the rest is not read");
  done_ = true;
  return false;
}

bool TarReader::skip_padding(const std::string& member, int64_t size) {
  const int64_t pad = padded(size) - size;
  if (pad > remaining()) {  // a plain file cut inside the padding: the member itself is whole
    problem(member, "truncated inside its padding: the member is whole, the shard is cut after it");
    done_ = true;
    return false;
  }
  return skip(member, pad);
}

bool TarReader::next(TarMember& out) {
  char block[kBlock];
  // What GNU long-name and pax records say of the next member. tarfile lets the record read
  // first win where two set one field, and so does this.
  std::string meta_name, meta_link;
  PaxRecords pax;
  while (!done_) {
    const int64_t before = pos_;
    if (!read_block(block)) {
      if (done_) break;  // corrupt gzip data, reported
      if (pos_ != before) {
        problem("", "truncated: a partial header block at the end");
      } else if (pos_ == 0 && compressed_) {
        problem("", "gzip data that decompresses to nothing, not a tar shard");
      } else {
        // Every writer (tarfile, webdataset, GNU tar, tessera.data.shards) ends a shard with the
        // marker: a shard cut at a member boundary shows by its absence alone.
        problem("", "no end-of-archive marker after " + std::to_string(members_) +
                        " members: the shard was probably cut short (an interrupted copy or write)");
      }
      done_ = true;
      break;
    }
    if (std::all_of(block, block + kBlock, [](char c) { return c == 0; })) {
      // The end-of-archive marker (two zero blocks; one is enough to stop). Zeros pad a tar to
      // its record size; anything else after the marker is not read, and is reported
      // (webdataset's reader stops there too, silently).
      if (const int64_t at = data_after_marker(); at >= 0)
        problem("", "data at " + at_byte(at) + " after the end-of-archive marker (a zeroed, "
                    "damaged header, or tars joined with cat): the rest is not read");
      done_ = true;
      break;
    }
    if (!checksum_ok(block)) {
      problem("", members_ == 0 ? "not a tar file (the first header's checksum does not match)"
                                : "corrupt header after " + std::to_string(members_) + " members; the rest is skipped");
      done_ = true;
      break;
    }
    const char type = block[156];
    const bool meta = type == 'L' || type == 'K' || type == 'x';  // applies to the next member
    std::string name = header_string(block, 100);
    if (std::memcmp(block + 257, "ustar", 5) == 0 && block[345] != '\0')
      name = header_string(block + 345, 155) + "/" + name;
    int64_t size = header_number(block + 124, 12);
    if (!meta) {
      if (!meta_name.empty()) name = meta_name;
      if (!pax.sparse_name.empty()) name = pax.sparse_name;
      if (pax.size != -1) size = pax.size;
    }
    const int64_t left = remaining();
    // The size is compared before it is rounded up to whole blocks: rounding a size near 2^63
    // overflowed and passed the check. A short last padding is checked after the data.
    if (size < 0 || size > left) {
      problem(name, size < 0 ? "malformed size field" : "truncated: its " + std::to_string(size) +
                                                           " bytes run past the end of the file");
      done_ = true;
      break;
    }
    if (meta) {
      if (size > (int64_t(1) << 20)) {
        problem(name, "a " + std::to_string(size) + "-byte metadata record; the rest is skipped");
        done_ = true;
        break;
      }
      std::string body(static_cast<size_t>(size), '\0');
      if (read(body.data(), size) != size) {
        if (!done_) problem(name, "truncated while reading its metadata");
        done_ = true;
        break;
      }
      if (!skip(name, padded(size) - size)) break;
      if (type == 'L' || type == 'K') {  // GNU long name / long link target
        std::string& field = type == 'L' ? meta_name : meta_link;
        if (field.empty()) field = body.substr(0, strnlen(body.c_str(), body.size()));
      } else {
        PaxRecords record;
        parse_pax(body, record);
        if (meta_name.empty()) meta_name = record.path;
        if (meta_link.empty()) meta_link = record.linkpath;
        if (pax.size == -1) pax.size = record.size;
        if (pax.sparse_name.empty()) pax.sparse_name = record.sparse_name;
        pax.sparse = pax.sparse || record.sparse;
      }
      continue;
    }
    const bool sparse = type == 'S' || pax.sparse;
    const bool regular = (type == '0' || type == '\0' || type == '7') && !sparse;
    const std::string link = meta_link.empty() ? header_string(block + 157, 100) : meta_link;
    meta_name.clear(), meta_link.clear(), pax = PaxRecords();
    if (!regular) {
      // Directories and the like hold nothing; links, devices and sparse files are reported,
      // since a sample that loses its image to one would otherwise be skipped without a reason.
      if (const std::string why = not_a_file(sparse ? 'S' : type, link); !why.empty())
        problem(name, why);
      // An old GNU sparse header may continue in extension blocks before its data.
      for (bool extended = type == 'S' && block[482] != 0; extended;) {
        if (!read_block(block)) {
          if (!done_) problem(name, "truncated inside its sparse map");
          done_ = true;
          return false;
        }
        extended = block[504] != 0;
      }
      if (!skip(name, padded(size))) break;
      continue;
    }
    if (text::utf8::sanitize(name) != name) {
      problem(name, "its name is not UTF-8; skipped");
      if (!skip(name, padded(size))) break;
      continue;
    }
    if (!tar_name_is_safe(name)) {
      problem(name, "its name leaves the archive's folder; skipped");
      if (!skip(name, padded(size))) break;
      continue;
    }
    if (size > limits_.max_member_bytes) {
      problem(name, std::to_string(size) + " bytes is over the limit of " + std::to_string(limits_.max_member_bytes) +
                        "; skipped");
      if (!skip(name, padded(size))) break;
      continue;
    }
    out.name = std::move(name);
    out.offset = gz_ ? -1 : pos_;
    out.size = size;
    if (limits_.headers_only) {  // as below, without keeping the bytes
      out.data.clear();
      if (!skip(out.name, size)) return false;
      ++members_;
      skip_padding(out.name, size);
      return true;
    }
    // Grown as bytes arrive: in a gzip stream the size is unchecked against the file, and a lying
    // header must not allocate what it claims.
    out.data.clear();
    constexpr int64_t kChunk = int64_t(1) << 24;
    while (static_cast<int64_t>(out.data.size()) < size) {
      const int64_t have = static_cast<int64_t>(out.data.size());
      const int64_t want = compressed_ ? std::min(kChunk, size - have) : size - have;
      out.data.resize(static_cast<size_t>(have + want));
      const int64_t got = read(out.data.data() + have, want);
      out.data.resize(static_cast<size_t>(have + got));
      if (got != want) break;
    }
    if (static_cast<int64_t>(out.data.size()) != size) {
      if (!done_) problem(out.name, "truncated while reading its data");
      done_ = true;
      return false;
    }
    ++members_;
    skip_padding(out.name, size);  // a short last padding is reported; this member is whole
    return true;
  }
  return false;
}

}  // namespace tessera::data
