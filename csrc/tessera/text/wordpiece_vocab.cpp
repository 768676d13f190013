// vocab.txt reading after HF tokenizers' models/wordpiece/mod.rs (WordPiece::read_file:
// BufRead::lines, then str::trim_end) and the token table the greedy matcher probes.
#include "tessera/text/wordpiece_vocab.h"
#include "tessera/core/regular_file.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "tessera/text/bert_pretokenize.h"
#include "tessera/text/hash_mix.h"
#include "tessera/text/utf8.h"

namespace tessera::text {
namespace {

// str::trim_end: drop trailing White_Space code points.
void trim_end(std::string& line) {
  while (!line.empty()) {
    size_t start = line.size() - 1;  // first byte of the last code point
    while (start > 0 && (static_cast<unsigned char>(line[start]) & 0xC0) == 0x80) --start;
    size_t i = start;
    if (!bert_is_whitespace(utf8::next(line, i))) return;
    line.resize(start);
  }
}

}  // namespace

uint64_t WordPieceTable::hash(std::string_view s) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ s.size();
  const char* p = s.data();
  size_t n = s.size();
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
  }
  if (n > 0) {
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ w) * 0x94D049BB133111EBull;
  }
  return hash_mix(h);
}

void WordPieceTable::grow() {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(old.empty() ? 64 : old.size() * 2, Slot{});
  mask_ = slots_.size() - 1;
  for (const Slot& s : old) {
    if (s.id < 0) continue;
    uint64_t i = s.hash & mask_;
    while (slots_[i].id >= 0) i = (i + 1) & mask_;
    slots_[i] = s;
  }
}

void WordPieceTable::insert(std::string_view token, int32_t id) {
  if (id < 0) throw std::invalid_argument("WordPieceTable: ids must be >= 0");
  if ((count_ + 1) * 2 > slots_.size()) grow();  // load factor <= 1/2
  const uint64_t h = hash(token);
  uint64_t i = h & mask_;
  for (; slots_[i].id >= 0; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.hash == h && s.len == token.size() &&
        std::string_view(keys_.data() + s.offset, s.len) == token) {
      s.id = id;
      return;
    }
  }
  slots_[i] = Slot{h, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(token.size()), id};
  keys_.append(token);
  ++count_;
  max_len_ = std::max(max_len_, token.size());
}

namespace {

// model.vocab of a tokenizer.json holding a WordPiece model ({"token": id}), as a list by id.
// transformers 5 saves a BERT folder with this file and no vocab.txt.
std::vector<std::string> tokenizer_json_vocab(const std::string& path, const std::string& text) {
  const auto fail = [&](const std::string& why) {
    return std::invalid_argument("WordPieceTokenizer: '" + path + "': " + why);
  };
  nlohmann::json data;
  try {
    data = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw fail(std::string("not valid JSON: ") + e.what());
  }
  const nlohmann::json* model = data.is_object() && data.contains("model") ? &data["model"] : nullptr;
  if (model == nullptr || !model->is_object() || !model->contains("vocab") || !(*model)["vocab"].is_object())
    throw fail("no WordPiece vocabulary (model.vocab)");
  if (model->contains("type") && (*model)["type"] != "WordPiece")
    throw fail("model.type is " + (*model)["type"].dump() + ", not WordPiece");
  if (model->contains("continuing_subword_prefix") && (*model)["continuing_subword_prefix"] != "##")
    throw fail("model.continuing_subword_prefix is " + (*model)["continuing_subword_prefix"].dump() +
               "; BERT's WordPiece continues words with \"##\"");
  const nlohmann::json& vocab = (*model)["vocab"];
  std::vector<std::string> tokens(vocab.size());
  std::vector<bool> seen(vocab.size(), false);
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= int64_t(vocab.size()))
      throw fail("model.vocab[\"" + token + "\"] is " + id.dump() + "; ids run from 0 to " +
                 std::to_string(vocab.size() - 1) + " without gaps");
    const auto i = static_cast<size_t>(id.get<int64_t>());
    if (seen[i]) throw fail("model.vocab gives id " + std::to_string(i) + " to two tokens");
    seen[i] = true;
    tokens[i] = token;
  }
  if (tokens.empty()) throw fail("model.vocab is empty");
  return tokens;
}

bool ends_with(const std::string& s, std::string_view tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

std::vector<std::string> read_wordpiece_vocab(const std::string& path) {
  core::require_regular_file(path, "a WordPiece vocabulary");
  std::ifstream in(path, std::ios::binary);
  if (!in.good())
    throw std::invalid_argument("WordPieceTokenizer: cannot open vocabulary file '" + path +
                                "': " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad())
    throw std::invalid_argument("WordPieceTokenizer: cannot read vocabulary file '" + path + "'");
  const std::string text = ss.str();
  if (ends_with(path, ".json")) return tokenizer_json_vocab(path, text);
  std::vector<std::string> lines;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    if (!utf8::valid(line))
      throw std::invalid_argument("WordPieceTokenizer: vocabulary file '" + path + "': line " +
                                  std::to_string(lines.size() + 1) + " is not valid UTF-8");
    trim_end(line);
    lines.push_back(std::move(line));
    pos = end + 1;
  }
  if (lines.empty())
    throw std::invalid_argument("WordPieceTokenizer: vocabulary file '" + path +
                                "' is empty (expected one token per line, as BERT's vocab.txt)");
  return lines;
}

}  // namespace tessera::text
