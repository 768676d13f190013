// CLIP byte-level BPE after open_clip's tokenizer.py (bytes_to_unicode, SimpleTokenizer
// __init__ vocabulary order, and SimpleTokenizer.bpe).
#include "tessera/text/clip_bpe.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <climits>
#include <functional>
#include <queue>
#include <unordered_map>

#include "tessera/text/hash_mix.h"
#include "tessera/text/utf8.h"

namespace tessera::text {
namespace {

// open_clip keeps lines [1, 49152 - 256 - 2 + 1) of the file: 48,894 merges, so that with
// 512 byte symbols and 2 special tokens the vocabulary is 49,408.
constexpr size_t kNumMerges = 49152 - 256 - 2;
// Longer words (in bytes) merge through a heap (bpe_long); nearly every word is shorter, and cached.
constexpr size_t kLongWord = 64;
constexpr uint64_t kEmptyKey = ~uint64_t(0);

uint64_t pair_key(int32_t a, int32_t b) {
  return (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
}

bool is_split_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

// Python's str.split() for a merges line: the stand-in alphabet holds no Unicode
// whitespace, so ASCII whitespace is all that can separate the two symbols.
std::vector<std::string_view> split_fields(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_split_space(line[i])) ++i;
    size_t j = i;
    while (j < line.size() && !is_split_space(line[j])) ++j;
    if (j > i) out.push_back(line.substr(i, j - i));
    i = j;
  }
  return out;
}

}  // namespace

ClipBpe::ClipBpe(std::string_view text, const std::string& source) {
  // bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes for
  // U+0100 upwards; the printable ones come first in id order.
  std::vector<int> order;
  bool printable[256] = {};
  for (int b = 0; b < 256; ++b) {
    printable[b] = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    if (printable[b]) order.push_back(b);
  }
  char32_t stand_in[256];
  int extra = 0;
  for (int b = 0; b < 256; ++b) stand_in[b] = printable[b] ? char32_t(b) : char32_t(256 + extra++);
  for (int b = 0; b < 256; ++b)
    if (!printable[b]) order.push_back(b);
  std::unordered_map<char32_t, char> byte_of;  // open_clip's byte_decoder
  for (int b = 0; b < 256; ++b) byte_of.emplace(stand_in[b], static_cast<char>(b));

  std::unordered_map<std::string, int32_t> encoder;  // printable spelling -> id
  id_bytes_.reserve(512 + kNumMerges + 2);
  for (int eow = 0; eow < 2; ++eow) {
    for (int i = 0; i < 256; ++i) {
      const int b = order[static_cast<size_t>(i)];
      std::string spelled;
      utf8::append(spelled, stand_in[b]);
      if (eow) spelled += "</w>";
      encoder[spelled] = static_cast<int32_t>(id_bytes_.size());
      id_bytes_.push_back(std::string(1, static_cast<char>(b)) + (eow ? "</w>" : ""));
      if (!eow) byte_id_[static_cast<size_t>(b)] = i;
    }
  }

  // Merge lines: the first line is a version header.
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(kNumMerges);
  size_t pos = text.find('\n');
  size_t line_no = 1;
  while (pos != std::string_view::npos && merges.size() < kNumMerges) {
    const size_t start = pos + 1;
    pos = text.find('\n', start);
    std::string_view line =
        text.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start);
    ++line_no;
    if (line.empty() && pos == std::string_view::npos) break;  // the file's final newline
    const auto fields = split_fields(line);
    TORCH_CHECK(fields.size() == 2, "ClipTokenizer: malformed BPE merges file '", source,
                "': line ", line_no, " should hold two symbols separated by a space, got '",
                std::string(line.substr(0, 80)), "'");
    merges.emplace_back(std::string(fields[0]), std::string(fields[1]));
  }
  TORCH_CHECK(merges.size() == kNumMerges, "ClipTokenizer: malformed BPE merges file '",
              source, "': expected a header line and at least ", kNumMerges,
              " merge lines, found ", merges.size(), " (is it bpe_simple_vocab_16e6.txt.gz?)");

  for (size_t r = 0; r < merges.size(); ++r) {
    const std::string joined = merges[r].first + merges[r].second;
    std::string bytes;
    for (size_t i = 0; i < joined.size();) {
      const char32_t c = utf8::next(joined, i);
      auto it = byte_of.find(c);
      TORCH_CHECK(it != byte_of.end(), "ClipTokenizer: malformed BPE merges file '", source,
                  "': line ", r + 2, " uses U+", std::hex, uint32_t(c),
                  ", which is not one of the 256 byte symbols");
      bytes.push_back(it->second);
    }
    encoder[joined] = static_cast<int32_t>(id_bytes_.size());  // later duplicates win
    id_bytes_.push_back(std::move(bytes));
  }
  sot_ = encoder["<start_of_text>"] = static_cast<int32_t>(id_bytes_.size());
  id_bytes_.push_back("<start_of_text>");
  eot_ = encoder["<end_of_text>"] = static_cast<int32_t>(id_bytes_.size());
  id_bytes_.push_back("<end_of_text>");

  // Pair table at load factor < 0.5. A merge whose halves are not in the vocabulary can
  // never fire (every symbol a word can hold is), so it is left out.
  size_t cap = 1;
  while (cap < 2 * merges.size()) cap <<= 1;
  pairs_.assign(cap, PairSlot{kEmptyKey, 0, 0});
  pair_mask_ = cap - 1;
  for (size_t r = 0; r < merges.size(); ++r) {
    auto a = encoder.find(merges[r].first), b = encoder.find(merges[r].second);
    if (a == encoder.end() || b == encoder.end()) continue;
    add_pair(a->second, b->second, static_cast<int32_t>(r),
             encoder.at(merges[r].first + merges[r].second));
  }
}

ClipBpe::~ClipBpe() = default;

void ClipBpe::add_pair(int32_t a, int32_t b, int32_t rank, int32_t merged) {
  const uint64_t key = pair_key(a, b);
  for (uint64_t h = hash_mix(key) & pair_mask_;; h = (h + 1) & pair_mask_) {
    PairSlot& s = pairs_[h];
    if (s.key == kEmptyKey || s.key == key) {
      s = PairSlot{key, rank, merged};  // a repeated pair keeps its last rank, as in Python
      return;
    }
  }
}

const ClipBpe::PairSlot* ClipBpe::find_pair(int32_t a, int32_t b) const {
  const uint64_t key = pair_key(a, b);
  for (uint64_t h = hash_mix(key) & pair_mask_;; h = (h + 1) & pair_mask_) {
    const PairSlot& s = pairs_[h];
    if (s.key == key) return &s;
    if (s.key == kEmptyKey) return nullptr;
  }
}

void ClipBpe::bpe(std::string_view word, std::vector<int32_t>& sym) const {
  sym.clear();
  for (char c : word) sym.push_back(byte_id_[static_cast<unsigned char>(c)]);
  sym.back() += 256;  // the last symbol carries </w>
  if (sym.size() > kLongWord) return bpe_long(sym);
  // Repeatedly merge the lowest-ranked adjacent pair, every occurrence left to right.
  while (sym.size() > 1) {
    int32_t best = INT32_MAX, first = 0, second = 0, merged = 0;
    size_t at = 0;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      const PairSlot* s = find_pair(sym[i], sym[i + 1]);
      if (s != nullptr && s->rank < best) {
        best = s->rank, first = sym[i], second = sym[i + 1], merged = s->merged, at = i;
      }
    }
    if (best == INT32_MAX) break;
    size_t w = at;
    for (size_t i = at; i < sym.size();) {
      if (i + 1 < sym.size() && sym[i] == first && sym[i + 1] == second) {
        sym[w++] = merged;
        i += 2;
      } else {
        sym[w++] = sym[i++];
      }
    }
    sym.resize(w);
  }
}

void ClipBpe::bpe_long(std::vector<int32_t>& sym) const {
  // Every merge makes a symbol whose own pairs rank after it (the merges were learned in that
  // order), so taking pairs by (rank, position) merges what the scan merges: the lowest-ranked
  // pair, its occurrences left to right. A popped pair whose symbols changed since is skipped.
  struct Candidate {
    int32_t rank, at, left, right, merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : at > o.at; }
  };
  const auto n = static_cast<int32_t>(sym.size());
  std::vector<int32_t> next(n), prev(n);
  for (int32_t i = 0; i < n; ++i) next[i] = i + 1 < n ? i + 1 : -1, prev[i] = i - 1;
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  const auto offer = [&](int32_t at) {
    const int32_t right = next[at];
    if (right < 0) return;
    if (const PairSlot* s = find_pair(sym[at], sym[right])) heap.push({s->rank, at, sym[at], sym[right], s->merged});
  };
  for (int32_t i = 0; i + 1 < n; ++i) offer(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int32_t right = next[c.at];
    if (sym[c.at] != c.left || right < 0 || sym[right] != c.right) continue;  // stale
    sym[c.at] = c.merged;
    sym[right] = -1;  // gone: merged into its left neighbour
    next[c.at] = next[right];
    if (next[right] >= 0) prev[next[right]] = c.at;
    if (prev[c.at] >= 0) offer(prev[c.at]);
    offer(c.at);
  }
  sym.erase(std::remove(sym.begin(), sym.end(), -1), sym.end());
}

void ClipBpe::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (word.size() == 1) {  // no pair to merge: the byte with </w>
    out.push_back(byte_id_[static_cast<unsigned char>(word[0])] + 256);
    return;
  }
  if (word[0] == '<') {
    if (word == "<start_of_text>") return out.push_back(sot_);
    if (word == "<end_of_text>") return out.push_back(eot_);
  }
  const uint64_t h = BpeWordCache::hash(word);
  if (cache_.lookup(word, h, out)) return;
  thread_local std::vector<int32_t> sym;
  bpe(word, sym);
  out.insert(out.end(), sym.begin(), sym.end());
  cache_.insert(word, h, sym);
}

size_t ClipBpe::cache_size() const { return cache_.size(); }

}  // namespace tessera::text
