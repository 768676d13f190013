// CLIP tokenizer after open_clip's tokenizer.py (SimpleTokenizer.encode/decode/__call__):
// clean -> pre-tokenize -> byte-level BPE, batched over threads.
#include "tessera/text/clip_tokenizer.h"
#include "tessera/core/regular_file.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <exception>
#include <fstream>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>

#include "tessera/text/clip_bpe.h"
#include "tessera/text/clip_pretokenize.h"
#include "tessera/text/clip_text_clean.h"
#include "tessera/text/parallel_chunks.h"
#include "tessera/text/utf8.h"

namespace tessera::text {
namespace {

// Runs fn(begin, end) over [0, n) in kTextsPerChunk chunks on up to at::get_num_threads() threads.
template <class F>
void parallel_ranges(int64_t n, const F& fn) {
  parallel_chunks((n + kTextsPerChunk - 1) / kTextsPerChunk, at::get_num_threads(),
                  [&](int64_t c) { fn(c * kTextsPerChunk, std::min(n, (c + 1) * kTextsPerChunk)); });
}

// gzread also passes plain (uncompressed) files through, so both spellings of the file work.
std::string read_merges_file(const std::string& path) {
  core::require_regular_file(path, "a BPE merges file");
  {
    std::ifstream probe(path, std::ios::binary);
    TORCH_CHECK(probe.good(), "ClipTokenizer: cannot open BPE merges file '", path, "': ",
                std::strerror(errno),
                " (it ships with open_clip as open_clip/bpe_simple_vocab_16e6.txt.gz)");
  }
  const std::unique_ptr<gzFile_s, int (*)(gzFile)> file(gzopen(path.c_str(), "rb"), &gzclose);  // closed on throw too
  TORCH_CHECK(file != nullptr, "ClipTokenizer: cannot open BPE merges file '", path, "'");
  gzFile f = file.get();
  // Only the header and the first 48,894 merges are used (3.2 MB of text for the whole real file):
  // stop after them, and at a byte cap, so a small gzip of gigabytes of NULs is not inflated.
  constexpr size_t kLinesUsed = 49152 - 256 - 2 + 1, kMaxBytes = size_t{64} << 20;
  std::string out;
  size_t lines = 0;
  char buf[1 << 16];
  while (lines <= kLinesUsed) {
    TORCH_CHECK(out.size() <= kMaxBytes, "ClipTokenizer: malformed BPE merges file '", path, "': more than ",
                kMaxBytes >> 20, " MiB without its ", kLinesUsed, " lines (is it bpe_simple_vocab_16e6.txt.gz?)");
    const int n = gzread(f, buf, sizeof(buf));
    if (n < 0) {
      int code = 0;
      const std::string msg = gzerror(f, &code);
      TORCH_CHECK(false, "ClipTokenizer: malformed BPE merges file '", path,
                  "': gzip data is corrupt (", msg, ")");
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    lines += static_cast<size_t>(std::count(buf, buf + n, '\n'));
  }
  return out;
}

// Per-thread buffers, reused from text to text so the steady state allocates nothing.
struct ClipScratch {
  std::string text;
  std::vector<std::string_view> pieces;
  std::vector<int32_t> ids;
};
ClipScratch& clip_scratch() {
  thread_local ClipScratch s;
  return s;
}

}  // namespace

struct ClipTokenizer::Impl {
  ClipBpe bpe;
  ClipPretokenizer pre;

  explicit Impl(const std::string& path) : bpe(read_merges_file(path), path) {
    // Build the cleaner's lazily made tables (entities, width map, ICU normalizers) now,
    // once, rather than in whichever batch threads first meet non-ASCII text.
    clip_clean_text("\xC3\x89&amp;&EACUTE;\xEF\xBC\xA1");  // É&amp;&EACUTE;Ａ
  }

  // Appends the ids of `text` to `out`, stopping once `out` holds `limit` ids (the rest
  // would be cut by tokenize anyway). Cleaning is whole-text, so it is not cut short.
  void encode_into(std::string_view text, std::vector<int32_t>& out, size_t limit) const {
    ClipScratch& s = clip_scratch();
    s.pieces.clear();
    if (clip_text_is_plain_ascii(text)) {
      // Plain ASCII: cleaning is lower-casing, and whitespace only separates pieces, so
      // mapping it to ' ' is as good as collapsing it.
      s.text.resize(text.size());
      for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        s.text[i] = (c >= 'A' && c <= 'Z') ? char(c + 32) : (c < 0x20 ? ' ' : c);
      }
      ClipPretokenizer::split_ascii(s.text, s.pieces);
    } else {
      s.text = clip_clean_text(text);
      pre.split(s.text, s.pieces);
    }
    for (std::string_view piece : s.pieces) {
      if (out.size() >= limit) break;
      bpe.encode_word(piece, out);
    }
  }
};

ClipTokenizer::ClipTokenizer(const std::string& bpe_path)
    : impl_(std::make_unique<Impl>(bpe_path)) {}
ClipTokenizer::~ClipTokenizer() = default;
ClipTokenizer::ClipTokenizer(ClipTokenizer&&) noexcept = default;
ClipTokenizer& ClipTokenizer::operator=(ClipTokenizer&&) noexcept = default;

std::vector<int64_t> ClipTokenizer::encode(const std::string& text) const {
  std::vector<int32_t>& ids = clip_scratch().ids;  // encode_into uses the other scratch buffers
  ids.clear();
  impl_->encode_into(text, ids, std::numeric_limits<size_t>::max());
  return std::vector<int64_t>(ids.begin(), ids.end());
}

std::vector<std::vector<int64_t>> ClipTokenizer::encode_batch(
    const std::vector<std::string>& texts) const {
  std::vector<std::vector<int64_t>> out(texts.size());
  parallel_ranges(static_cast<int64_t>(texts.size()), [&](int64_t b, int64_t e) {
    std::vector<int32_t>& ids = clip_scratch().ids;
    for (int64_t i = b; i < e; ++i) {
      ids.clear();
      impl_->encode_into(texts[size_t(i)], ids, std::numeric_limits<size_t>::max());
      out[size_t(i)].assign(ids.begin(), ids.end());
    }
  });
  return out;
}

std::string ClipTokenizer::decode(const std::vector<int64_t>& ids) const {
  const int64_t n = impl_->bpe.vocab_size();
  std::string bytes;
  for (int64_t id : ids) {
    TORCH_CHECK_INDEX(id >= 0 && id < n, "ClipTokenizer.decode: token id ", id,
                      " is outside the vocabulary [0, ", n, ")");
    bytes += impl_->bpe.token_bytes(id);
  }
  // Bytes -> text first (a word may end mid-character), then the end-of-word marks.
  const std::string text = utf8::sanitize(bytes);
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (text.compare(i, 4, "</w>") == 0) {
      out.push_back(' ');
      i += 4;
    } else {
      out.push_back(text[i++]);
    }
  }
  return out;
}

at::Tensor ClipTokenizer::tokenize(const std::vector<std::string>& texts,
                                   int64_t context_length) const {
  TORCH_CHECK_VALUE(context_length >= 2, "ClipTokenizer.tokenize: context_length must be at "
                    "least 2 (room for <start_of_text> and <end_of_text>), got ", context_length);
  const auto n = static_cast<int64_t>(texts.size());
  // Uninitialised: each row is written whole below, padding included, so the pages are
  // touched once and by the threads that fill them.
  at::Tensor result = at::empty({n, context_length}, at::kLong);
  int64_t* data = result.data_ptr<int64_t>();
  const int64_t sot = impl_->bpe.sot_id(), eot = impl_->bpe.eot_id();
  const auto room = static_cast<size_t>(context_length - 2);
  parallel_ranges(n, [&](int64_t b, int64_t e) {
    std::vector<int32_t>& ids = clip_scratch().ids;
    for (int64_t i = b; i < e; ++i) {
      ids.clear();
      impl_->encode_into(texts[size_t(i)], ids, room);
      // Same row as open_clip's "cut to context_length, then last = <end_of_text>".
      const size_t m = std::min(ids.size(), room);
      int64_t* row = data + i * context_length;
      row[0] = sot;
      std::copy(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(m), row + 1);
      row[m + 1] = eot;
      std::fill(row + m + 2, row + context_length, int64_t(0));
    }
  });
  return result;
}

int64_t ClipTokenizer::sot_token_id() const { return impl_->bpe.sot_id(); }
int64_t ClipTokenizer::eot_token_id() const { return impl_->bpe.eot_id(); }
int64_t ClipTokenizer::vocab_size() const { return impl_->bpe.vocab_size(); }

}  // namespace tessera::text
