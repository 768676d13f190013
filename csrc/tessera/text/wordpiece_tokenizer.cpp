// BertTokenizerFast after transformers 5 (models/bert/tokenization_bert.py) over HF tokenizers
// 0.23: added_vocabulary.rs (special tokens cut from the raw text, leftmost-longest),
// normalizers/bert.rs + pre_tokenizers/bert.rs (bert_pretokenize.cpp), models/wordpiece
// (greedy longest-match-first, "##" continuations, [UNK] for a word that cannot be split or
// is longer than max_input_chars_per_word), TemplateProcessing "[CLS] $A [SEP]" with
// truncation that keeps both, decoders/wordpiece.rs and transformers' clean_up_tokenization.
#include "tessera/text/wordpiece_tokenizer.h"
#include "tessera/core/regular_file.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <exception>
#include <fstream>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "tessera/text/bert_pretokenize.h"
#include "tessera/text/parallel_chunks.h"
#include "tessera/text/wordpiece_vocab.h"

namespace tessera::text {
namespace {

constexpr std::string_view kPrefix = "##";

bool is_continuation_byte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size())
    s.replace(pos, from.size(), to);
}

// Per-thread buffers, reused from text to text.
struct WordPieceScratch {
  std::string buf;
  std::vector<BertWord> words;
  std::vector<int32_t> content;
};
WordPieceScratch& wordpiece_scratch() {
  thread_local WordPieceScratch s;
  return s;
}

}  // namespace

struct WordPieceTokenizer::Impl {
  std::string path;
  WordPieceOptions options;
  BertNormalizerOptions normalizer;
  std::vector<std::string> tokens;  // id -> token, added tokens after the vocabulary
  std::vector<bool> shadowed;       // a later line holds the same token (no id -> token)
  int64_t vocab_size = 0;
  WordPieceTable words, continuations;  // "x" -> id; "##x" -> id keyed by "x"
  WordPieceTable added;                 // added tokens beyond the vocabulary
  std::vector<int64_t> special_ids;
  std::vector<bool> special;            // by id
  std::vector<std::pair<std::string, int32_t>> specials_longest_first;
  std::array<bool, 256> special_first_byte{};
  int32_t unk = -1, sep = -1, pad = -1, cls = -1, mask = -1;

  int32_t required(const std::string& token, const char* role) const {
    const int32_t id = words.find(token);
    if (id < 0)
      throw std::invalid_argument("WordPieceTokenizer: vocabulary file '" + path + "' has no " +
                                  role + " token '" + token + "' (a BERT vocab.txt has [PAD], " +
                                  "[UNK], [CLS], [SEP] and [MASK])");
    return id;
  }

  int64_t find(std::string_view token) const {
    const int32_t id = words.find(token);
    return id >= 0 ? id : added.find(token);
  }

  int64_t add_special(const std::string& token) {
    if (token.empty()) throw std::invalid_argument("WordPieceTokenizer: a special token cannot be empty");
    int64_t id = find(token);
    if (id < 0) {
      id = static_cast<int64_t>(tokens.size());
      if (id >= std::numeric_limits<int32_t>::max())
        throw std::invalid_argument("WordPieceTokenizer: too many tokens");
      tokens.push_back(token);
      shadowed.push_back(false);
      special.push_back(false);
      added.insert(token, static_cast<int32_t>(id));
    }
    if (!special[size_t(id)]) {
      special[size_t(id)] = true;
      special_ids.push_back(id);
      specials_longest_first.emplace_back(token, static_cast<int32_t>(id));
      std::stable_sort(specials_longest_first.begin(), specials_longest_first.end(),
                       [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
      special_first_byte[static_cast<unsigned char>(token[0])] = true;
    }
    return id;
  }

  // models/wordpiece tokenize() of one pre-token, appending its ids to `out`.
  void wordpiece(std::string_view word, uint32_t chars, std::vector<int32_t>& out) const {
    if (chars > options.max_input_chars_per_word) {
      out.push_back(unk);
      return;
    }
    const size_t mark = out.size(), n = word.size();
    for (size_t start = 0; start < n;) {
      const WordPieceTable& table = start == 0 ? words : continuations;
      // Longest candidate first, never longer than the longest token; ends on characters.
      size_t end = std::min(n, start + table.max_len());
      while (end > start && end < n && is_continuation_byte(word[end])) --end;
      int32_t id = -1;
      while (end > start) {
        id = table.find(word.substr(start, end - start));
        if (id >= 0) break;
        do --end; while (end > start && is_continuation_byte(word[end]));
      }
      if (id < 0) {  // the whole word is [UNK]
        out.resize(mark);
        out.push_back(unk);
        return;
      }
      out.push_back(id);
      start = end;
    }
  }

  void encode_plain(std::string_view text, std::vector<int32_t>& out, size_t limit) const {
    WordPieceScratch& s = wordpiece_scratch();
    bert_pretokenize(text, normalizer, s.buf, s.words);
    for (const BertWord& w : s.words) {
      if (out.size() >= limit) return;
      wordpiece(std::string_view(s.buf).substr(w.begin, w.size), w.chars, out);
    }
  }

  // The ids of `text` without [CLS]/[SEP]; stops once `limit` ids are out.
  void encode_content(std::string_view text, std::vector<int32_t>& out, size_t limit) const {
    size_t plain = 0;
    for (size_t i = 0; i < text.size() && out.size() < limit; ++i) {
      if (!special_first_byte[static_cast<unsigned char>(text[i])]) continue;
      for (const auto& [token, id] : specials_longest_first) {
        if (text.compare(i, token.size(), token) != 0) continue;
        encode_plain(text.substr(plain, i - plain), out, limit);
        if (out.size() < limit) out.push_back(id);
        plain = i + token.size();
        i = plain - 1;
        break;
      }
    }
    if (plain < text.size() && out.size() < limit) encode_plain(text.substr(plain), out, limit);
  }

  // One row: content cut to fit, framed by [CLS] ... [SEP]; appended to `dest`.
  void encode_row(std::string_view text, const WordPieceEncodeOptions& o,
                  std::vector<int32_t>& dest) const {
    const int64_t specials = o.add_special_tokens ? 2 : 0;
    size_t room = std::numeric_limits<size_t>::max();
    if (o.max_length >= 0) room = static_cast<size_t>(o.max_length - specials);
    std::vector<int32_t>& content = wordpiece_scratch().content;
    content.clear();
    encode_content(text, content, o.truncate_left ? std::numeric_limits<size_t>::max() : room);
    const size_t keep = std::min(content.size(), room);
    const auto first = content.begin() + static_cast<std::ptrdiff_t>(o.truncate_left ? content.size() - keep : 0);
    if (o.add_special_tokens) dest.push_back(cls);
    dest.insert(dest.end(), first, first + static_cast<std::ptrdiff_t>(keep));
    if (o.add_special_tokens) dest.push_back(sep);
  }

  void check(const WordPieceEncodeOptions& o) const {
    const int64_t specials = o.add_special_tokens ? 2 : 0;
    if (o.max_length != -1 && o.max_length < specials)
      throw std::invalid_argument(
          "WordPieceTokenizer: max_length must be at least " + std::to_string(specials) +
          (specials ? " (room for [CLS] and [SEP])" : "") + ", got " + std::to_string(o.max_length));
  }
};

WordPieceTokenizer::WordPieceTokenizer(const std::string& vocab_path, WordPieceOptions options)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = vocab_path;
  m.options = std::move(options);
  if (m.options.max_input_chars_per_word < 0)
    throw std::invalid_argument("WordPieceTokenizer: max_input_chars_per_word must be >= 0");
  m.normalizer.clean_text = true;
  m.normalizer.handle_chinese_chars = m.options.tokenize_chinese_chars;
  m.normalizer.strip_accents = m.options.strip_accents.value_or(m.options.do_lower_case);
  m.normalizer.lowercase = m.options.do_lower_case;
  m.tokens = read_wordpiece_vocab(vocab_path);
  m.vocab_size = static_cast<int64_t>(m.tokens.size());
  if (m.vocab_size >= std::numeric_limits<int32_t>::max())
    throw std::invalid_argument("WordPieceTokenizer: vocabulary file '" + vocab_path + "' is too large");
  m.shadowed.assign(m.tokens.size(), false);
  m.special.assign(m.tokens.size(), false);
  for (size_t id = 0; id < m.tokens.size(); ++id) {
    const std::string& t = m.tokens[id];
    const int32_t before = m.words.find(t);
    if (before >= 0) m.shadowed[size_t(before)] = true;
    m.words.insert(t, static_cast<int32_t>(id));
    if (t.size() > kPrefix.size() && t.compare(0, kPrefix.size(), kPrefix) == 0)
      m.continuations.insert(std::string_view(t).substr(kPrefix.size()), static_cast<int32_t>(id));
  }
  const WordPieceOptions& o = m.options;
  m.pad = m.required(o.pad_token, "padding");
  m.unk = m.required(o.unk_token, "unknown");
  m.cls = m.required(o.cls_token, "classifier (first)");
  m.sep = m.required(o.sep_token, "separator (last)");
  // BertTokenizerFast's special tokens, in its order; a missing [MASK] is added after the
  // vocabulary, as transformers adds it.
  for (const std::string* t : {&o.unk_token, &o.sep_token, &o.pad_token, &o.cls_token, &o.mask_token})
    m.add_special(*t);
  m.mask = static_cast<int32_t>(m.find(o.mask_token));
}

namespace {

// Says where the rest of a tokenizer.json differs from BERT's pipeline (bert_folder.py says the
// same in Python): transformers' AutoTokenizer reads such a folder alone as written (other ids),
// its BertTokenizer builds BERT's, as this class does.
void check_bert_pipeline(const std::string& path, const nlohmann::json& data) {
  std::string differ;
  const auto note = [&](const std::string& what) { differ += (differ.empty() ? "" : "; ") + what; };
  const nlohmann::json model = data.value("model", nlohmann::json::object());
  if (model.is_object() && model.contains("max_input_chars_per_word") && model["max_input_chars_per_word"] != 100)
    note("model.max_input_chars_per_word " + model["max_input_chars_per_word"].dump());
  if (model.is_object() && model.contains("unk_token") && model["unk_token"] != "[UNK]")
    note("model.unk_token " + model["unk_token"].dump());
  if (data.value("pre_tokenizer", nlohmann::json()) != nlohmann::json{{"type", "BertPreTokenizer"}})
    note("pre_tokenizer " + data.value("pre_tokenizer", nlohmann::json()).dump().substr(0, 80));
  const nlohmann::json post = data.value("post_processor", nlohmann::json());
  const auto special = [](const char* id, int type) {
    return nlohmann::json{{"SpecialToken", {{"id", id}, {"type_id", type}}}};
  };
  const auto sequence = [](const char* id, int type) { return nlohmann::json{{"Sequence", {{"id", id}, {"type_id", type}}}}; };
  const nlohmann::json single = {special("[CLS]", 0), sequence("A", 0), special("[SEP]", 0)};
  const nlohmann::json pair = {special("[CLS]", 0), sequence("A", 0), special("[SEP]", 0), sequence("B", 1),
                               special("[SEP]", 1)};
  const auto first = [&](const char* key) {
    const nlohmann::json v = post.value(key, nlohmann::json());
    return v.is_array() && !v.empty() ? v[0] : nlohmann::json();
  };
  const bool bert_post = post.is_object() &&
                         ((post.value("type", "") == "TemplateProcessing" && post.value("single", nlohmann::json()) == single &&
                           post.value("pair", nlohmann::json()) == pair) ||
                          (post.value("type", "") == "BertProcessing" && first("cls") == "[CLS]" && first("sep") == "[SEP]"));
  if (!bert_post) note("post_processor " + post.dump().substr(0, 80));
  if (!differ.empty())
    TORCH_WARN("WordPieceTokenizer: '", path, "': ", differ, ": not BERT's. This class reads BERT's pipeline, as ",
               "transformers' BertTokenizer does; transformers' AutoTokenizer on this folder alone reads the file ",
               "as written and gives other ids");
}

// A tokenizer.json's BertNormalizer flags, for a folder without tokenizer_config.json: transformers
// then reads the file as written (its BertTokenizer class would take the config's flags).
WordPieceOptions normalizer_options(const std::string& path, WordPieceOptions o) {
  nlohmann::json data;
  core::require_regular_file(path, "a tokenizer.json");
  try {
    std::ifstream in(path);
    in >> data;
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument("WordPieceTokenizer: '" + path + "' is not valid JSON: " + e.what());
  }
  const nlohmann::json norm = data.is_object() ? data.value("normalizer", nlohmann::json()) : nlohmann::json();
  const auto flag = [&](const char* key, bool fallback) {
    if (!norm.contains(key)) return fallback;
    if (!norm[key].is_boolean())
      throw std::invalid_argument("WordPieceTokenizer: '" + path + "': normalizer." + key + " must be true or false");
    return norm[key].get<bool>();
  };
  if (!norm.is_object() || norm.value("type", "") != "BertNormalizer" || !flag("clean_text", true))
    throw std::invalid_argument("WordPieceTokenizer: '" + path + "': the normalizer is not a BertNormalizer with "
                                "clean_text (and no tokenizer_config.json names BERT's flags)");
  o.do_lower_case = flag("lowercase", true);
  o.tokenize_chinese_chars = flag("handle_chinese_chars", true);
  if (norm.contains("strip_accents") && !norm["strip_accents"].is_null())
    o.strip_accents = flag("strip_accents", false);
  check_bert_pipeline(path, data);
  return o;
}

}  // namespace

WordPieceTokenizer WordPieceTokenizer::from_pretrained(const std::string& folder) {
  const std::string config_path = folder + "/tokenizer_config.json";
  for (const char* name : {"/tokenizer_config.json", "/vocab.txt", "/tokenizer.json"})  // probed below by opening
    core::require_regular_file(folder + name, "a tokenizer file");
  nlohmann::json config = nlohmann::json::object();
  if (std::ifstream in(config_path); in.good()) {
    try {
      in >> config;
    } catch (const nlohmann::json::exception& e) {
      throw std::invalid_argument("WordPieceTokenizer: '" + config_path + "' is not valid JSON: " + e.what());
    }
    if (!config.is_object())
      throw std::invalid_argument("WordPieceTokenizer: '" + config_path + "' is not a JSON object");
  }
  // A token is a string, or {"content": ...} (AddedToken) in older files.
  auto token_of = [&](const nlohmann::json& v, const std::string& key) -> std::string {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string())
      return v["content"].get<std::string>();
    throw std::invalid_argument("WordPieceTokenizer: '" + config_path + "': " + key +
                                " must be a token string");
  };
  auto flag = [&](const char* key, bool fallback) {
    if (!config.contains(key) || config[key].is_null()) return fallback;
    if (!config[key].is_boolean())
      throw std::invalid_argument("WordPieceTokenizer: '" + config_path + "': " + key +
                                  " must be true or false");
    return config[key].get<bool>();
  };
  WordPieceOptions o;
  o.do_lower_case = flag("do_lower_case", true);
  o.tokenize_chinese_chars = flag("tokenize_chinese_chars", true);
  if (config.contains("strip_accents") && !config["strip_accents"].is_null())
    o.strip_accents = flag("strip_accents", false);
  for (auto [key, field] : {std::pair{"unk_token", &o.unk_token}, {"sep_token", &o.sep_token},
                            {"pad_token", &o.pad_token}, {"cls_token", &o.cls_token},
                            {"mask_token", &o.mask_token}})
    if (config.contains(key) && !config[key].is_null()) *field = token_of(config[key], key);
  // transformers 5 saves tokenizer.json without vocab.txt; its model.vocab is the vocabulary.
  std::string vocab_path = folder + "/vocab.txt";
  if (!std::ifstream(vocab_path).good() && std::ifstream(folder + "/tokenizer.json").good()) {
    vocab_path = folder + "/tokenizer.json";
    if (!std::ifstream(config_path).good()) o = normalizer_options(vocab_path, o);
  }
  WordPieceTokenizer tok(vocab_path, o);
  // Added tokens beyond the vocabulary, in id order (LAVIS's [DEC] is 30522 after BERT's).
  if (config.contains("added_tokens_decoder")) {
    std::vector<std::pair<int64_t, nlohmann::json>> added;
    for (const auto& [key, value] : config["added_tokens_decoder"].items()) {
      int64_t id = -1;
      try {
        id = std::stoll(key);
      } catch (const std::exception&) {
      }
      if (id < 0) throw std::invalid_argument("WordPieceTokenizer: '" + config_path +
                                              "': added_tokens_decoder key '" + key + "' is not an id");
      added.emplace_back(id, value);
    }
    std::sort(added.begin(), added.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& [id, value] : added) {
      const std::string token = token_of(value, "added_tokens_decoder");
      const bool is_special = value.is_object() && value.value("special", false);
      if (!is_special && id < tok.vocab_size()) continue;  // an ordinary vocabulary entry
      if (!is_special)
        throw std::invalid_argument("WordPieceTokenizer: '" + config_path + "': added token '" +
                                    token + "' is not special; only special added tokens are supported");
      const int64_t got = tok.add_special_token(token);
      if (got != id)
        throw std::invalid_argument("WordPieceTokenizer: '" + config_path + "': added token '" +
                                    token + "' has id " + std::to_string(id) + " but takes id " +
                                    std::to_string(got) + " after " + vocab_path);
    }
  }
  for (const char* key : {"bos_token", "eos_token"})
    if (config.contains(key) && !config[key].is_null()) tok.add_special_token(token_of(config[key], key));
  for (const char* key : {"additional_special_tokens", "extra_special_tokens"})
    if (config.contains(key) && config[key].is_array())
      for (const auto& t : config[key]) tok.add_special_token(token_of(t, key));
  return tok;
}

WordPieceTokenizer::~WordPieceTokenizer() = default;
WordPieceTokenizer::WordPieceTokenizer(WordPieceTokenizer&&) noexcept = default;
WordPieceTokenizer& WordPieceTokenizer::operator=(WordPieceTokenizer&&) noexcept = default;

int64_t WordPieceTokenizer::add_special_token(const std::string& token) {
  return impl_->add_special(token);
}

std::vector<int64_t> WordPieceTokenizer::encode(std::string_view text,
                                                const WordPieceEncodeOptions& options) const {
  impl_->check(options);
  std::vector<int32_t> row;
  impl_->encode_row(text, options, row);
  return std::vector<int64_t>(row.begin(), row.end());
}

WordPieceBatch WordPieceTokenizer::encode_batch(const std::vector<std::string_view>& texts,
                                                const WordPieceEncodeOptions& options,
                                                int num_threads) const {
  impl_->check(options);
  const auto n = static_cast<int64_t>(texts.size());
  const int64_t chunks = (n + kTextsPerChunk - 1) / kTextsPerChunk;
  struct Chunk {
    std::vector<int32_t> ids;
    std::vector<int64_t> lengths;
  };
  std::vector<Chunk> parts(static_cast<size_t>(chunks));
  parallel_chunks(chunks, num_threads, [&](int64_t c) {
    Chunk& part = parts[size_t(c)];
    for (int64_t i = c * kTextsPerChunk, e = std::min(n, i + kTextsPerChunk); i < e; ++i) {
      const size_t before = part.ids.size();
      impl_->encode_row(texts[size_t(i)], options, part.ids);
      part.lengths.push_back(static_cast<int64_t>(part.ids.size() - before));
    }
  });
  WordPieceBatch batch;
  size_t total = 0;
  for (const Chunk& p : parts) total += p.ids.size();
  batch.ids.reserve(total);
  batch.offsets.reserve(size_t(n) + 1);
  for (const Chunk& p : parts) {
    batch.ids.insert(batch.ids.end(), p.ids.begin(), p.ids.end());
    for (int64_t len : p.lengths) batch.offsets.push_back(batch.offsets.back() + len);
  }
  return batch;
}

std::vector<std::string> WordPieceTokenizer::tokenize(std::string_view text) const {
  std::vector<int32_t> ids;
  impl_->encode_content(text, ids, std::numeric_limits<size_t>::max());
  std::vector<std::string> out;
  out.reserve(ids.size());
  for (int32_t id : ids) out.push_back(impl_->tokens[size_t(id)]);
  return out;
}

std::string WordPieceTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens,
                                       bool clean_up_tokenization_spaces) const {
  const Impl& m = *impl_;
  std::string out, piece;
  bool first = true;
  for (int64_t id : ids) {
    const std::string& token = id_to_token(id);
    if (m.shadowed[size_t(id)] || (skip_special_tokens && m.special[size_t(id)])) continue;
    // decoders/wordpiece.rs: glue "##" pieces, a space before the others, then its cleanup
    // of each piece (so " ." -> "." but " ' " never matches inside one piece).
    if (first) piece = token;
    else if (token.compare(0, kPrefix.size(), kPrefix) == 0) piece = token.substr(kPrefix.size());
    else piece = " " + token;
    first = false;
    if (piece.find(' ') != std::string::npos) {
      for (auto [from, to] : {std::pair{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","},
                              {" ' ", "'"}, {" n't", "n't"}, {" 'm", "'m"}, {" do not", " don't"},
                              {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}})
        replace_all(piece, from, to);
    }
    out += piece;
  }
  if (clean_up_tokenization_spaces) {  // transformers' clean_up_tokenization, on the whole text
    for (auto [from, to] : {std::pair{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","},
                            {" ' ", "'"}, {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"},
                            {" 've", "'ve"}, {" 're", "'re"}})
      replace_all(out, from, to);
  }
  return out;
}

int64_t WordPieceTokenizer::token_to_id(std::string_view token) const { return impl_->find(token); }

const std::string& WordPieceTokenizer::id_to_token(int64_t id) const {
  if (id < 0 || id >= size())
    throw std::out_of_range("WordPieceTokenizer: token id " + std::to_string(id) +
                            " is outside the vocabulary [0, " + std::to_string(size()) + ")");
  return impl_->tokens[size_t(id)];
}

bool WordPieceTokenizer::is_special(int64_t id) const {
  return id >= 0 && id < size() && impl_->special[size_t(id)];
}
std::vector<int64_t> WordPieceTokenizer::special_ids() const { return impl_->special_ids; }
int64_t WordPieceTokenizer::vocab_size() const { return impl_->vocab_size; }
int64_t WordPieceTokenizer::size() const { return static_cast<int64_t>(impl_->tokens.size()); }
int64_t WordPieceTokenizer::unk_token_id() const { return impl_->unk; }
int64_t WordPieceTokenizer::sep_token_id() const { return impl_->sep; }
int64_t WordPieceTokenizer::pad_token_id() const { return impl_->pad; }
int64_t WordPieceTokenizer::cls_token_id() const { return impl_->cls; }
int64_t WordPieceTokenizer::mask_token_id() const { return impl_->mask; }
const WordPieceOptions& WordPieceTokenizer::options() const { return impl_->options; }
const std::string& WordPieceTokenizer::vocab_path() const { return impl_->path; }

int64_t WordPieceBatch::longest() const {
  int64_t best = 0;
  for (int64_t r = 0; r < rows(); ++r) best = std::max(best, length(r));
  return best;
}

void WordPieceBatch::pad_into(int64_t width, int64_t pad_id, bool pad_left, int64_t* ids_out,
                              int64_t* mask_out) const {
  for (int64_t r = 0; r < rows(); ++r) {
    const int64_t len = std::min(length(r), width), pad = width - len;
    int64_t* ids_row = ids_out + r * width;
    int64_t* mask_row = mask_out + r * width;
    const int64_t at = pad_left ? pad : 0;
    const int32_t* src = ids.data() + offsets[size_t(r)];
    std::copy(src, src + len, ids_row + at);
    std::fill(mask_row + at, mask_row + at + len, int64_t(1));
    std::fill(ids_row + (pad_left ? 0 : len), ids_row + (pad_left ? pad : width), pad_id);
    std::fill(mask_row + (pad_left ? 0 : len), mask_row + (pad_left ? pad : width), int64_t(0));
  }
}

}  // namespace tessera::text
