// Tests for csrc/tessera/text, against open_clip's SimpleTokenizer and google/sentencepiece.
//
// WordPiece cases use a hand-written vocabulary; their expectations are what transformers 5's
// BertTokenizerFast (tokenizers 0.23) gives with it (tests/python/test_wordpiece.py compares the
// two on real text).
//
// CLIP goldens were produced with open_clip_torch 3.3.0 (`SimpleTokenizer().encode(s)`,
// ftfy 6.3.1); SentencePiece goldens with the Python sentencepiece 0.2.2 package
// (`SentencePieceProcessor(model_file=...).encode(s)`) on llama2c_tokenizer.model.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <dlfcn.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "tessera/text/bert_pretokenize.h"
#include "tessera/text/bpe_word_cache.h"
#include "tessera/text/clip_pretokenize.h"
#include "tessera/text/clip_text_clean.h"
#include "tessera/text/clip_tokenizer.h"
#include "tessera/text/html_unescape.h"
#include "tessera/text/sentencepiece_tokenizer.h"
#include "tessera/text/wordpiece_tokenizer.h"
#include "tessera/text/wordpiece_vocab.h"
#include "test_util.h"

namespace {

using tessera::text::ClipTokenizer;
using tessera::text::SentencePieceTokenizer;
using Ids = std::vector<int64_t>;

std::string clip_bpe_path() {
  return tessera::testing::shared_dir() + "/assets/clip_bpe_simple_vocab_16e6.txt.gz";
}
std::string spm_path() {
  return tessera::testing::shared_dir() + "/assets/llama2c_tokenizer.model";
}
bool exists(const std::string& p) { return std::ifstream(p).good(); }

// Loading the merges takes a few tens of milliseconds; share one tokenizer.
const ClipTokenizer& clip() {
  static const ClipTokenizer tok(clip_bpe_path());
  return tok;
}

class ClipTokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!exists(clip_bpe_path())) GTEST_SKIP() << "missing " << clip_bpe_path();
  }
};

std::string temp_file(const std::string& name, const std::string& contents) {
  const std::string path = tessera::testing::temp_path(name);
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

TEST_F(ClipTokenizerTest, VocabularyLayout) {
  EXPECT_EQ(clip().vocab_size(), 49408);
  EXPECT_EQ(clip().sot_token_id(), 49406);
  EXPECT_EQ(clip().eot_token_id(), 49407);
}

TEST_F(ClipTokenizerTest, ReadmeExample) {
  at::Tensor t = clip().tokenize({"a photo of a cat"});
  ASSERT_EQ(t.sizes(), (at::IntArrayRef{1, 77}));
  EXPECT_EQ(t.scalar_type(), at::kLong);
  const Ids want = {49406, 320, 1125, 539, 320, 2368, 49407};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(t[0][int64_t(i)].item<int64_t>(), want[i]);
  EXPECT_EQ(t.slice(1, 7).abs().sum().item<int64_t>(), 0);  // zero padded
}

TEST_F(ClipTokenizerTest, GoldensFromOpenClip) {
  const std::vector<std::pair<std::string, Ids>> cases = {
      {"a photo of a cat", {320, 1125, 539, 320, 2368}},
      {"Hello, World! It's 2024: we'll see... (maybe) -- don't you think?",
       {3306, 267, 1002, 256, 585, 568, 273, 271, 273, 275, 281, 649, 1342, 862, 678, 263,
        3746, 264, 2432, 847, 713, 592, 1331, 286}},
      {"\xC3\x9Cn\xC3\xAF" "c\xC3\xB6" "d\xC3\xA9 caf\xC3\xA9",  // Ünïcödé café
       {6522, 77, 35689, 66, 7255, 67, 4166, 15304}},
      {"\xE6\x9D\xB1\xE4\xBA\xAC\xE3\x82\xBF\xE3\x83\xAF\xE3\x83\xBC\xE3\x81\xAE\xE5\x86\x99"
       "\xE7\x9C\x9F",  // 東京タワーの写真
       {48338, 21078, 105, 34941, 2429, 107, 13457, 21575, 44653, 33440, 509}},
      {"I \xE2\x9D\xA4\xEF\xB8\x8F \xF0\x9F\x90\x88 and \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD",
       {328, 1752, 2074, 486, 537, 43722}},  // I ❤️ 🐈 and 👍🏽
      {"Tom &amp; Jerry &lt;3 &eacute;t&eacute; &#8220;quoted&#8221; &copy2024",
       {2435, 261, 9164, 283, 274, 3459, 39694, 257, 27706, 257, 5811, 273, 271, 273, 275}},
      {"  lots \t of \n\n whitespace   ", {2958, 539, 4699, 2138}},
      // “Curly” quotes and the ﬁnest ＦＵＬＬＷＩＤＴＨ text
      {"\xE2\x80\x9C" "Curly\xE2\x80\x9D quotes and the \xEF\xAC\x81nest "
       "\xEF\xBC\xA6\xEF\xBC\xB5\xEF\xBC\xAC\xEF\xBC\xAC\xEF\xBC\xB7\xEF\xBC\xA9\xEF\xBC\xA4"
       "\xEF\xBC\xB4\xEF\xBC\xA8 text",
       {257, 20795, 257, 5808, 537, 518, 7707, 9407, 23571, 4160}},
      // ΟΔΟΣ İSTANBUL STRASSE ß: final sigma and İ -> i + U+0307, as Python's str.lower
      {"\xCE\x9F\xCE\x94\xCE\x9F\xCE\xA3 \xC4\xB0STANBUL STRASSE \xC3\x9F",
       {138, 123, 138, 112, 138, 123, 139, 480, 328, 16384, 11231, 1894, 8938, 127, 509}},
      {"<start_of_text>x<END_OF_TEXT>", {49406, 343, 49407}},
      // U+0345 is dropped by open_clip's regex (see clip_pretokenize.cpp); U+017F (long s)
      // does not make a "'s" contraction; U+180E is punctuation, not whitespace.
      {"x\xCD\x85y !\xCD\x85?", {343, 344, 256, 286}},
      {"it'\xC5\xBF ok '\xE2\x84\xAA", {585, 6, 129, 379, 2481, 262, 330}},
      {"\xE1\xA0\x8E!", {157, 254, 236, 256}},
      {"", {}},
  };
  for (const auto& [text, want] : cases) EXPECT_EQ(clip().encode(text), want) << text;
}

TEST_F(ClipTokenizerTest, EmptyTextIsStartAndEnd) {
  at::Tensor t = clip().tokenize({""}, 5);
  const Ids row(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + 5);
  EXPECT_EQ(row, (Ids{49406, 49407, 0, 0, 0}));
}

TEST_F(ClipTokenizerTest, LongTextIsCutAndEndsWithEot) {
  std::string text;
  for (int i = 0; i < 100; ++i) text += "word ";  // "word" is one token, 2653
  at::Tensor t = clip().tokenize({text, "a cat"});
  ASSERT_EQ(t.size(0), 2);
  EXPECT_EQ(t[0][0].item<int64_t>(), 49406);
  EXPECT_EQ(t[0][1].item<int64_t>(), 2653);
  EXPECT_EQ(t[0][75].item<int64_t>(), 2653);
  EXPECT_EQ(t[0][76].item<int64_t>(), 49407);
  EXPECT_EQ(t[1][3].item<int64_t>(), 49407);

  // Exactly full: 75 words + SOT + EOT fit without cutting.
  std::string full;
  for (int i = 0; i < 75; ++i) full += "word ";
  at::Tensor f = clip().tokenize({full});
  EXPECT_EQ(f[0][75].item<int64_t>(), 2653);
  EXPECT_EQ(f[0][76].item<int64_t>(), 49407);
}

TEST_F(ClipTokenizerTest, ContextLengthValidation) {
  EXPECT_THROW(clip().tokenize({"x"}, 1), c10::ValueError);
  EXPECT_THROW(clip().tokenize({"x"}, 0), c10::ValueError);
  at::Tensor t = clip().tokenize({"a photo of a cat"}, 2);
  EXPECT_EQ(t[0][0].item<int64_t>(), 49406);
  EXPECT_EQ(t[0][1].item<int64_t>(), 49407);
  EXPECT_EQ(clip().tokenize({}, 77).sizes(), (at::IntArrayRef{0, 77}));
}

TEST_F(ClipTokenizerTest, DecodeRoundTrip) {
  EXPECT_EQ(clip().decode(clip().encode("a photo of a cat")), "a photo of a cat ");
  EXPECT_EQ(clip().decode(clip().encode("\xC3\x9Cn\xC3\xAF" "c\xC3\xB6" "d\xC3\xA9 caf\xC3\xA9")),
            "\xC3\xBCn\xC3\xAF" "c\xC3\xB6" "d\xC3\xA9 caf\xC3\xA9 ");  // lower-cased
  // A lone continuation byte (id 128 is byte 0xA1) decodes to U+FFFD, as errors="replace".
  EXPECT_EQ(clip().decode({128, 2368}), "\xEF\xBF\xBD" "cat ");
  EXPECT_EQ(clip().decode({49406, 2368, 49407}), "<start_of_text>cat <end_of_text>");
  EXPECT_THROW(clip().decode({49408}), c10::IndexError);
  EXPECT_THROW(clip().decode({-1}), c10::IndexError);
}

TEST_F(ClipTokenizerTest, BatchMatchesSingle) {
  std::vector<std::string> texts;
  std::mt19937 rng(7);
  const std::vector<std::string> words = {"cat", "Dog", "it's", "42", "caf\xC3\xA9", "&amp;",
                                          "!!", "\xE6\x9D\xB1", "zebra", "\xF0\x9F\x90\x88"};
  for (int i = 0; i < 3000; ++i) {
    std::string t;
    for (int k = 0, n = int(rng() % 30); k < n; ++k) t += words[rng() % words.size()] + " ";
    texts.push_back(t);
  }
  const auto batch = clip().encode_batch(texts);
  at::Tensor tok = clip().tokenize(texts, 16);
  ASSERT_EQ(batch.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    const Ids single = clip().encode(texts[i]);
    ASSERT_EQ(batch[i], single) << texts[i];
    Ids row = {49406};
    row.insert(row.end(), single.begin(), single.begin() + std::min<size_t>(single.size(), 14));
    row.push_back(49407);
    row.resize(16, 0);
    const int64_t* p = tok.data_ptr<int64_t>() + i * 16;
    ASSERT_EQ(Ids(p, p + 16), row) << texts[i];
  }
}

TEST_F(ClipTokenizerTest, InvalidUtf8BecomesReplacementCharacter) {
  // A Python str cannot hold these bytes; the C++ API reads them as U+FFFD.
  EXPECT_EQ(clip().encode("caf\xE9 ok"), clip().encode("caf\xEF\xBF\xBD ok"));
  EXPECT_EQ(clip().encode("\xFF\xFE"), clip().encode("\xEF\xBF\xBD\xEF\xBF\xBD"));
}

TEST(BpeWordCache, BoundedAndExact) {
  tessera::text::BpeWordCache cache(/*max_words=*/640, /*max_bytes=*/1 << 20);
  for (int i = 0; i < 20000; ++i) {
    const std::string w = "word" + std::to_string(i);
    const uint64_t h = tessera::text::BpeWordCache::hash(w);
    std::vector<int32_t> got;
    if (!cache.lookup(w, h, got)) cache.insert(w, h, {i, -i, 7});
    ASSERT_LE(cache.size(), 640u);
  }
  size_t hits = 0;
  for (int i = 0; i < 20000; ++i) {
    const std::string w = "word" + std::to_string(i);
    std::vector<int32_t> got = {99};
    if (cache.lookup(w, tessera::text::BpeWordCache::hash(w), got)) {
      ++hits;
      ASSERT_EQ(got, (std::vector<int32_t>{99, i, -i, 7}));  // appended, never mixed up
    } else {
      ASSERT_EQ(got, (std::vector<int32_t>{99}));
    }
  }
  EXPECT_GT(hits, 0u);
  EXPECT_LE(hits, 640u);
}

TEST_F(ClipTokenizerTest, MissingFileNamesPath) {
  try {
    ClipTokenizer("/no/such/dir/bpe.txt.gz");
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/no/such/dir/bpe.txt.gz"), std::string::npos);
  }
}

TEST_F(ClipTokenizerTest, MalformedFileNamesPath) {
  const std::string short_file = temp_file("tessera_short_bpe.txt", "#version: 0.2\ni n\nt h\n");
  const std::string bad_line = temp_file("tessera_bad_bpe.txt", "#version: 0.2\ni n x\n");
  const std::string bad_gzip =
      temp_file("tessera_bad_bpe.txt.gz", std::string("\x1f\x8b\x08\x00garbage-garbage", 20));
  for (const std::string& path : {short_file, bad_line, bad_gzip}) {
    try {
      ClipTokenizer tok(path);
      FAIL() << "expected an error for " << path;
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("malformed"), std::string::npos) << e.what();
    }
  }
}

TEST(ClipTextClean, FtfySubsetAndHtml) {
  using tessera::text::clip_clean_text;
  EXPECT_EQ(clip_clean_text("  Hello\t\tWORLD \n"), "hello world");
  EXPECT_EQ(clip_clean_text("Tom &amp;amp; Jerry"), "tom & jerry");  // ftfy loops to a fixpoint
  EXPECT_EQ(clip_clean_text("&amp;ldquo;x"), "\"x");                  // then uncurls
  EXPECT_EQ(clip_clean_text("\xEF\xAC\x81" "ne"), "fine");             // ﬁ ligature
  EXPECT_EQ(clip_clean_text("a\x1b[31mred\x1b[0m\x08!"), "ared!");     // escapes, controls
  EXPECT_EQ(clip_clean_text("e\xCC\x81"), "\xC3\xA9");                // NFC
  EXPECT_EQ(clip_clean_text("&EACUTE;T&Eacute;"), "\xC3\xA9t\xC3\xA9");
  EXPECT_EQ(clip_clean_text("a\xC2\xA0" "b\xE3\x80\x80" "c"), "a b c");  // NBSP, U+3000
  // A '<' turns ftfy's unescaping off, so only html.unescape's two passes remain.
  EXPECT_EQ(clip_clean_text("<b>&amp;amp;amp;</b>"), "<b>&amp;</b>");
}

TEST(HtmlUnescape, PythonRules) {
  using tessera::text::html_unescape;
  EXPECT_EQ(html_unescape(U"&#65;&#x42;&#X43;&#0;&#128;&#xD800;&#1114112;&#1;"),
            U"ABC\uFFFD\u20AC\uFFFD\uFFFD");
  EXPECT_EQ(html_unescape(U"&copy2024 &amp &ampx; &notanentity; AT&T"),
            U"\u00A92024 & &x; \u00ACanentity; AT&T");
  EXPECT_EQ(html_unescape(U"&hellip;&hellip"), U"\u2026&hellip");
}

TEST(ClipPretokenizer, ScannerMatchesRegexOnAscii) {
  tessera::text::ClipPretokenizer pre;
  std::mt19937 rng(1);
  const std::string alphabet = "ab's'tlrevmd<>_ 0123!?.,;:-'\"()[]{}#&*";
  const std::vector<std::string> chunks = {"<start_of_text>", "<end_of_text>", "'re", "'ll",
                                           "'ve", "it's", "!<end_of_text>", "x'"};
  for (int i = 0; i < 20000; ++i) {
    std::string s;
    for (int k = 0, n = int(rng() % 24); k < n; ++k) {
      if (rng() % 8 == 0) s += chunks[rng() % chunks.size()];
      else s += alphabet[rng() % alphabet.size()];
    }
    std::vector<std::string_view> a, b;
    tessera::text::ClipPretokenizer::split_ascii(s, a);
    pre.split_regex(s, b);
    ASSERT_EQ(a, b) << s;
  }
}

class SentencePieceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!exists(spm_path())) GTEST_SKIP() << "missing " << spm_path();
  }
};

TEST_F(SentencePieceTest, Goldens) {
  SentencePieceTokenizer sp(spm_path());
  EXPECT_EQ(sp.vocab_size(), 32000);
  EXPECT_EQ(sp.bos_id(), 1);
  EXPECT_EQ(sp.eos_id(), 2);
  EXPECT_EQ(sp.pad_id(), -1);
  EXPECT_EQ(sp.encode("Hello world!"), (Ids{1, 15043, 3186, 29991}));
  EXPECT_EQ(sp.encode("Hello world!", false, true), (Ids{15043, 3186, 29991, 2}));
  EXPECT_EQ(sp.encode("The quick brown fox jumps over the lazy dog.", false),
            (Ids{450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889}));
  // Ünïcödé café 東京 🐈: the cat is not in the vocabulary, so it falls back to bytes
  EXPECT_EQ(sp.encode("\xC3\x9Cn\xC3\xAF" "c\xC3\xB6" "d\xC3\xA9 caf\xC3\xA9 "
                      "\xE6\x9D\xB1\xE4\xBA\xAC \xF0\x9F\x90\x88", false),
            (Ids{7189, 29876, 30085, 29883, 9289, 29948, 274, 28059, 29871, 30591, 30675,
                 29871, 243, 162, 147, 139}));
  EXPECT_EQ(sp.encode("  leading spaces and 123 numbers", false),
            (Ids{259, 8236, 8162, 322, 29871, 29896, 29906, 29941, 3694}));
  EXPECT_EQ(sp.encode("", true), (Ids{1}));
  EXPECT_EQ(sp.decode({1, 15043, 3186, 29991, 2}), "Hello world!");
  EXPECT_EQ(sp.id_to_piece(15043), "\xE2\x96\x81Hello");  // ▁Hello
  EXPECT_EQ(sp.piece_to_id("\xE2\x96\x81Hello"), 15043);
  EXPECT_EQ(sp.piece_to_id("no-such-piece"), 0);  // unk
  EXPECT_EQ(sp.id_to_piece(1), "<s>");
  EXPECT_THROW(sp.id_to_piece(32000), c10::IndexError);
  EXPECT_THROW(sp.decode({-5}), c10::IndexError);
}

TEST_F(SentencePieceTest, RoundTrip) {
  SentencePieceTokenizer sp(spm_path());
  const std::vector<std::string> texts = {"The quick brown fox.", "  two  spaces",
                                          "caf\xC3\xA9 \xF0\x9F\x90\x88"};
  for (const std::string& s : texts) EXPECT_EQ(sp.decode(sp.encode(s)), s);
}

TEST(SentencePieceErrors, MissingAndMalformed) {
  try {
    SentencePieceTokenizer sp("/no/such/tokenizer.model");
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/no/such/tokenizer.model"), std::string::npos);
  }
  const std::string junk = temp_file("tessera_junk.model", "definitely not a protobuf");
  try {
    SentencePieceTokenizer sp(junk);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find(junk), std::string::npos);
  }
}

// Linked as a plain dependency, Debian's libsentencepiece built its bundled absl
// `FLAGS_minloglevel` over c10's flag of that name: `caffe2_use_fatal_for_enforce` came on and an
// out-of-memory allocation aborted the program. It is now opened deep-bound from a module of its
// own (text/sentencepiece_shim.h): c10's flags keep their defaults and the allocation throws.
TEST(SentencePieceIsolation, C10FlagsAndOutOfMemoryErrorsAreLeftAlone) {
  if (dlsym(RTLD_DEFAULT, "__asan_init")) GTEST_SKIP() << "sanitizer builds open it without RTLD_DEEPBIND";
  if (!exists(spm_path())) GTEST_SKIP() << spm_path() << " missing";
  const auto* minloglevel = static_cast<const int*>(dlsym(RTLD_DEFAULT, "FLAGS_minloglevel"));
  const auto* fatal = static_cast<const bool*>(dlsym(RTLD_DEFAULT, "FLAGS_caffe2_use_fatal_for_enforce"));
  ASSERT_TRUE(minloglevel && fatal) << "c10's flags are not in the global scope";
  SentencePieceTokenizer sp(spm_path());
  sp.encode("Hello world!");
  EXPECT_EQ(*minloglevel, 0);  // c10's defaults, as in a program without tessera
  EXPECT_FALSE(*fatal);
  EXPECT_THROW(at::empty({2, 500000000000}, at::kLong), c10::Error);
}

// ---- WordPiece (BERT) -------------------------------------------------------------------

using tessera::text::WordPieceEncodeOptions;
using tessera::text::WordPieceOptions;
using tessera::text::WordPieceTokenizer;

const std::vector<std::string> kTinyVocab = {
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "a", "##b", "##bb",
    "##a", "hello", "world", "wor", "##ld", ",", "!", ".", "'", "s", "the", "cafe", "caf",
    "##\xC3\xA9", "\xE6\x9D\xB1", "\xE4\xBA\xAC", "[", "]", "i", "##\xCC\x87", "Hello", "do",
    "n", "t"};  // ##é, 東, 京, ##U+0307

std::string tiny_vocab_file(const std::string& name = "tessera_wp_vocab.txt") {
  std::string text;
  for (const std::string& t : kTinyVocab) text += t + "\n";
  return temp_file(name, text);
}

class WordPieceTest : public ::testing::Test {
 protected:
  WordPieceTokenizer tok{tiny_vocab_file()};
  int64_t id(const std::string& token) const { return tok.token_to_id(token); }
  Ids content(const std::string& text) const {
    WordPieceEncodeOptions o;
    o.add_special_tokens = false;
    return tok.encode(text, o);
  }
};

TEST_F(WordPieceTest, SpecialTokenIds) {
  EXPECT_EQ(tok.vocab_size(), int64_t(kTinyVocab.size()));
  EXPECT_EQ(tok.size(), tok.vocab_size());
  EXPECT_EQ(tok.pad_token_id(), 0);
  EXPECT_EQ(tok.unk_token_id(), 1);
  EXPECT_EQ(tok.cls_token_id(), 2);
  EXPECT_EQ(tok.sep_token_id(), 3);
  EXPECT_EQ(tok.mask_token_id(), 4);
  EXPECT_EQ(tok.special_ids(), (Ids{1, 3, 0, 2, 4}));  // transformers' order: unk, sep, pad, cls, mask
  EXPECT_EQ(tok.token_to_id("##able"), 7);
  EXPECT_EQ(tok.token_to_id("nope"), -1);
  EXPECT_EQ(tok.id_to_token(5), "un");
}

TEST_F(WordPieceTest, GreedyLongestMatchFirst) {
  EXPECT_EQ(content("unaffable"), (Ids{id("un"), id("##aff"), id("##able")}));
  // "world" is one token although "wor" + "##ld" also spell it.
  EXPECT_EQ(content("world"), (Ids{id("world")}));
  // abbb: a, then the longest continuation ##bb, then ##b.
  EXPECT_EQ(content("abbb"), (Ids{id("a"), id("##bb"), id("##b")}));
  EXPECT_EQ(content("aaa"), (Ids{id("a"), id("##a"), id("##a")}));
  EXPECT_EQ(tok.tokenize("unaffable abbb"),
            (std::vector<std::string>{"un", "##aff", "##able", "a", "##bb", "##b"}));
}

TEST_F(WordPieceTest, WordThatCannotBeSplitIsOneUnk) {
  // "unx": "un" matches, "##x" does not, so the whole word is [UNK] (not "un" [UNK]).
  EXPECT_EQ(content("unx the"), (Ids{1, id("the")}));
  EXPECT_EQ(content("xyz"), (Ids{1}));
  // Longer than max_input_chars_per_word (100): [UNK] although it splits.
  EXPECT_EQ(content(std::string(100, 'a')).size(), 100u);
  EXPECT_EQ(content(std::string(101, 'a')), (Ids{1}));
}

TEST_F(WordPieceTest, FramingAndPunctuation) {
  EXPECT_EQ(tok.encode("Hello, WORLD!"), (Ids{2, id("hello"), id(","), id("world"), id("!"), 3}));
  EXPECT_EQ(content("the's."), (Ids{id("the"), id("'"), id("s"), id(".")}));
  // "don" is one word: "do" matches, "##n" does not, so it is [UNK].
  EXPECT_EQ(content("don't"), (Ids{1, id("'"), id("t")}));
  EXPECT_EQ(tok.encode(""), (Ids{2, 3}));
  EXPECT_EQ(tok.encode(" \t\n "), (Ids{2, 3}));
}

TEST_F(WordPieceTest, CleaningDropsControlsAndNormalizesWhitespace) {
  // NUL, backspace, U+FFFD, zero-width space (Cf) are dropped without splitting the word;
  // tab, newline, U+3000 are spaces.
  EXPECT_EQ(content("he\x01llo\x08 wo\xE2\x80\x8Brld\xEF\xBF\xBD"), (Ids{id("hello"), id("world")}));
  EXPECT_EQ(content(std::string("hel\0lo", 6)), (Ids{id("hello")}));
  EXPECT_EQ(content("a\tthe\nthe\xE3\x80\x80" "a"), (Ids{id("a"), id("the"), id("the"), id("a")}));
  // Ill-formed UTF-8 reads as U+FFFD, which cleaning drops.
  EXPECT_EQ(content("hel\xFFlo"), (Ids{id("hello")}));
}

TEST_F(WordPieceTest, AccentsAndCase) {
  // Lower-casing strips accents unless told otherwise (BERT's rule).
  EXPECT_EQ(content("Caf\xC3\xA9"), (Ids{id("cafe")}));       // Café
  EXPECT_EQ(content("CAFE\xCC\x81"), (Ids{id("cafe")}));      // CAFE + combining acute
  WordPieceOptions keep;
  keep.strip_accents = false;
  WordPieceTokenizer accents(tiny_vocab_file(), keep);
  EXPECT_EQ(accents.encode("Caf\xC3\xA9"), (Ids{2, id("caf"), id("##\xC3\xA9"), 3}));
  // İ lower-cases to i + U+0307 (Rust's char::to_lowercase); stripping drops the dot first.
  EXPECT_EQ(accents.encode("\xC4\xB0"), (Ids{2, id("i"), id("##\xCC\x87"), 3}));
  EXPECT_EQ(tok.encode("\xC4\xB0"), (Ids{2, id("i"), 3}));
  WordPieceOptions cased;
  cased.do_lower_case = false;
  WordPieceTokenizer c(tiny_vocab_file(), cased);
  EXPECT_EQ(c.encode("Hello HELLO hello"), (Ids{2, id("Hello"), 1, id("hello"), 3}));
  // Without lower-casing nothing is stripped either.
  EXPECT_EQ(c.encode("caf\xC3\xA9"), (Ids{2, id("caf"), id("##\xC3\xA9"), 3}));
}

TEST_F(WordPieceTest, ChineseCharactersAreSplitOut) {
  // 東京the: each ideograph is a word of its own.
  EXPECT_EQ(content("\xE6\x9D\xB1\xE4\xBA\xAC" "the"),
            (Ids{id("\xE6\x9D\xB1"), id("\xE4\xBA\xAC"), id("the")}));
  WordPieceOptions off;
  off.tokenize_chinese_chars = false;
  WordPieceTokenizer t(tiny_vocab_file(), off);
  EXPECT_EQ(t.encode("\xE6\x9D\xB1\xE4\xBA\xAC" "the"), (Ids{2, 1, 3}));
}

TEST_F(WordPieceTest, SpecialTokensInTextStayWhole) {
  EXPECT_EQ(content("a[SEP]the [MASK]"), (Ids{id("a"), 3, id("the"), 4}));
  EXPECT_EQ(content("[CLS][PAD]"), (Ids{2, 0}));
  // Matched before lower-casing: "[sep]" is punctuation and an unknown word.
  EXPECT_EQ(content("[sep]"), (Ids{id("["), 1, id("]")}));
  // BLIP-2's decoder bos, added after the vocabulary as LAVIS does.
  const int64_t dec = tok.add_special_token("[DEC]");
  EXPECT_EQ(dec, int64_t(kTinyVocab.size()));
  EXPECT_EQ(tok.size(), tok.vocab_size() + 1);
  EXPECT_EQ(tok.add_special_token("[DEC]"), dec);
  EXPECT_EQ(tok.encode("[DEC]a"), (Ids{2, dec, id("a"), 3}));
  EXPECT_EQ(tok.decode({2, dec, id("a"), 3}), "[CLS] [DEC] a [SEP]");
  EXPECT_EQ(tok.decode({2, dec, id("a"), 3}, true), "a");
  EXPECT_EQ(tok.token_to_id("[DEC]"), dec);
  EXPECT_THROW(tok.add_special_token(""), std::invalid_argument);
}

TEST_F(WordPieceTest, Truncation) {
  WordPieceEncodeOptions o;
  o.max_length = 4;
  EXPECT_EQ(tok.encode("hello world the a", o), (Ids{2, id("hello"), id("world"), 3}));
  o.truncate_left = true;
  EXPECT_EQ(tok.encode("hello world the a", o), (Ids{2, id("the"), id("a"), 3}));
  o.max_length = 2;
  EXPECT_EQ(tok.encode("hello", o), (Ids{2, 3}));
  o.max_length = 1;
  EXPECT_THROW(tok.encode("hello", o), std::invalid_argument);
  o.add_special_tokens = false;
  o.truncate_left = false;
  EXPECT_EQ(tok.encode("unaffable", o), (Ids{id("un")}));  // cut inside a word's pieces
}

TEST_F(WordPieceTest, BatchMatchesSingleAndPads) {
  std::vector<std::string> texts;
  std::mt19937 rng(3);
  const std::vector<std::string> words = {"hello", "World!", "unaffable", "abbb", "x", "[SEP]",
                                          "Caf\xC3\xA9", "\xE6\x9D\xB1\xE4\xBA\xAC", "the's", ""};
  for (int i = 0; i < 700; ++i) {
    std::string t;
    for (int k = 0, n = int(rng() % 12); k < n; ++k) t += words[rng() % words.size()] + " ";
    texts.push_back(t);
  }
  const std::vector<std::string_view> views(texts.begin(), texts.end());
  WordPieceEncodeOptions o;
  o.max_length = 9;
  const auto batch = tok.encode_batch(views, o, 4);
  ASSERT_EQ(batch.rows(), int64_t(texts.size()));
  for (size_t i = 0; i < texts.size(); ++i) {
    const Ids single = tok.encode(texts[i], o);
    ASSERT_EQ(Ids(batch.ids.begin() + batch.offsets[i], batch.ids.begin() + batch.offsets[i + 1]),
              single) << texts[i];
  }
  EXPECT_EQ(batch.longest(), 9);
  const auto small = tok.encode_batch({"hello", "hello world the"}, {}, 2);
  std::vector<int64_t> ids(2 * 6), mask(2 * 6);
  small.pad_into(6, tok.pad_token_id(), false, ids.data(), mask.data());
  EXPECT_EQ(ids, (Ids{2, id("hello"), 3, 0, 0, 0, 2, id("hello"), id("world"), id("the"), 3, 0}));
  EXPECT_EQ(mask, (Ids{1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 0}));
  small.pad_into(6, tok.pad_token_id(), true, ids.data(), mask.data());
  EXPECT_EQ(ids, (Ids{0, 0, 0, 2, id("hello"), 3, 0, 2, id("hello"), id("world"), id("the"), 3}));
  EXPECT_EQ(mask, (Ids{0, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1}));
  EXPECT_EQ(tok.encode_batch({}, {}, 4).rows(), 0);
}

TEST_F(WordPieceTest, DecodeLikeBertTokenizerFast) {
  const Ids ids = tok.encode("Hello, unaffable WORLD! the's");
  EXPECT_EQ(tok.decode(ids), "[CLS] hello, unaffable world! the's [SEP]");
  EXPECT_EQ(tok.decode(ids, true), "hello, unaffable world! the's");
  // Without transformers' clean-up only the WordPiece decoder's per-token one remains.
  EXPECT_EQ(tok.decode(ids, true, false), "hello, unaffable world! the ' s");
  EXPECT_EQ(tok.decode({id("##able"), id("un")}), "##able un");  // a first "##" piece is kept
  EXPECT_EQ(tok.decode({1, id("a"), 0, 0}, true), "a");            // [UNK] and [PAD] are special
  EXPECT_EQ(tok.decode({}), "");
  EXPECT_THROW(tok.decode({int64_t(kTinyVocab.size())}), std::out_of_range);
  EXPECT_THROW(tok.decode({-1}), std::out_of_range);
}

TEST(WordPieceErrors, NameTheFile) {
  auto expect_invalid = [](const std::string& path, const std::string& needle) {
    try {
      WordPieceTokenizer t(path);
      FAIL() << "expected an error for " << path;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_invalid("/no/such/dir/vocab.txt", "cannot open");
  expect_invalid(temp_file("tessera_wp_empty.txt", ""), "empty");
  expect_invalid(temp_file("tessera_wp_nocls.txt", "[PAD]\n[UNK]\n[SEP]\nhello\n"), "[CLS]");
  expect_invalid(temp_file("tessera_wp_nounk.txt", "[PAD]\n[CLS]\n[SEP]\n"), "[UNK]");
  expect_invalid(temp_file("tessera_wp_badutf8.txt", "[PAD]\n[UNK]\n\xFF\n"), "line 3");
  EXPECT_THROW(WordPieceTokenizer::from_pretrained("/no/such/bert-folder"), std::invalid_argument);
}

TEST(WordPieceVocab, ReadsLikeTokenizers) {
  // Trailing whitespace (and "\r") is trimmed, a missing [MASK] is added after the vocabulary,
  // and a repeated token keeps its last id.
  const std::string path = temp_file("tessera_wp_crlf.txt",
                                     "[PAD]\r\n[UNK]  \n[CLS]\n[SEP]\nab\nab\nlast");
  EXPECT_EQ(tessera::text::read_wordpiece_vocab(path),
            (std::vector<std::string>{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "ab", "ab", "last"}));
  WordPieceTokenizer t(path);
  EXPECT_EQ(t.vocab_size(), 7);
  EXPECT_EQ(t.mask_token_id(), 7);
  EXPECT_EQ(t.size(), 8);
  EXPECT_EQ(t.token_to_id("ab"), 5);
  EXPECT_EQ(t.encode("AB"), (Ids{2, 5, 3}));
  EXPECT_EQ(t.decode({4, 5}), "ab");  // id 4 has no token of its own any more

  tessera::text::WordPieceTable table;
  for (int i = 0; i < 5000; ++i) table.insert("tok" + std::to_string(i), i);
  for (int i = 0; i < 5000; ++i) ASSERT_EQ(table.find("tok" + std::to_string(i)), i);
  EXPECT_EQ(table.find("tok5000"), -1);
  EXPECT_EQ(table.size(), 5000u);
}

TEST(WordPieceFolder, TokenizerConfigAndAddedTokens) {
  const std::string dir = tessera::testing::temp_path("wp_folder");
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/vocab.txt") << [] {
    std::string text;
    for (const std::string& t : kTinyVocab) text += t + "\n";
    return text;
  }();
  const std::string dec_id = std::to_string(kTinyVocab.size());
  std::ofstream(dir + "/tokenizer_config.json")
      << R"({"do_lower_case": false, "strip_accents": null, "model_max_length": 512,
            "bos_token": "[DEC]", "added_tokens_decoder": {
              "0": {"content": "[PAD]", "special": true},
              ")" << dec_id << R"(": {"content": "[DEC]", "special": true}}})";
  const WordPieceTokenizer t = WordPieceTokenizer::from_pretrained(dir);
  EXPECT_FALSE(t.options().do_lower_case);
  EXPECT_EQ(t.token_to_id("[DEC]"), int64_t(kTinyVocab.size()));
  EXPECT_TRUE(t.is_special(int64_t(kTinyVocab.size())));
  EXPECT_EQ(t.encode("[DEC]Hello"), (Ids{2, int64_t(kTinyVocab.size()), t.token_to_id("Hello"), 3}));
  std::ofstream(dir + "/tokenizer_config.json") << "{not json";
  EXPECT_THROW(WordPieceTokenizer::from_pretrained(dir), std::invalid_argument);
}

// transformers 5 saves a BERT folder as tokenizer.json without vocab.txt.
TEST(WordPieceFolder, TokenizerJsonWithoutVocabTxt) {
  const std::string dir = tessera::testing::temp_path("wp_json_folder");
  std::filesystem::create_directories(dir);
  nlohmann::json vocab = nlohmann::json::object();
  for (size_t i = 0; i < kTinyVocab.size(); ++i) vocab[kTinyVocab[i]] = i;
  const nlohmann::json data = {
      {"model", {{"type", "WordPiece"}, {"continuing_subword_prefix", "##"}, {"vocab", vocab}}},
      {"normalizer", {{"type", "BertNormalizer"}, {"lowercase", true}}},
      {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
      {"post_processor", {{"type", "BertProcessing"}, {"sep", {"[SEP]", 3}}, {"cls", {"[CLS]", 2}}}}};
  std::ofstream(dir + "/tokenizer.json") << data.dump();
  const WordPieceTokenizer from_json = WordPieceTokenizer::from_pretrained(dir);
  const WordPieceTokenizer from_txt(tiny_vocab_file());
  EXPECT_EQ(from_json.vocab_path(), dir + "/tokenizer.json");
  EXPECT_EQ(from_json.vocab_size(), int64_t(kTinyVocab.size()));
  for (const char* text : {"Hello, world!", "unaffable caf\xC3\xA9 \xE6\x9D\xB1\xE4\xBA\xAC", "[MASK] don't"})
    EXPECT_EQ(from_json.encode(text), from_txt.encode(text)) << text;

  // Without tokenizer_config.json the normalizer's flags hold, as transformers reads the file.
  nlohmann::json cased = data;
  cased["normalizer"]["lowercase"] = false;
  std::ofstream(dir + "/tokenizer.json", std::ios::trunc) << cased.dump();
  EXPECT_FALSE(WordPieceTokenizer::from_pretrained(dir).options().do_lower_case);
  std::ofstream(dir + "/tokenizer_config.json") << R"({"do_lower_case": true})";
  EXPECT_TRUE(WordPieceTokenizer::from_pretrained(dir).options().do_lower_case);

  auto expect_invalid = [&](nlohmann::json bad, const std::string& needle) {
    std::ofstream(dir + "/tokenizer.json", std::ios::trunc) << bad.dump();
    try {
      WordPieceTokenizer::from_pretrained(dir);
      FAIL() << "expected an error for " << bad.dump().substr(0, 80);
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("tokenizer.json"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  nlohmann::json gap = data;
  gap["model"]["vocab"]["hello"] = 999;
  expect_invalid(gap, "without gaps");
  nlohmann::json twice = data;
  twice["model"]["vocab"]["hello"] = 0;
  expect_invalid(twice, "two tokens");
  nlohmann::json bpe = data;
  bpe["model"]["type"] = "BPE";
  expect_invalid(bpe, "not WordPiece");
  expect_invalid(nlohmann::json{{"model", {{"type", "WordPiece"}}}}, "model.vocab");

  // Read as written (no config), a pipeline other than BERT's is said: transformers' AutoTokenizer
  // reads the folder alone as written, its BertTokenizer (as this class) reads BERT's.
  std::filesystem::remove(dir + "/tokenizer_config.json");
  struct Capture : c10::WarningHandler {
    std::vector<std::string> seen;
    void process(const c10::Warning& w) override { seen.push_back(w.msg()); }
  };
  nlohmann::json limit = data, split = data, bare = data, unk = data;
  limit["model"]["max_input_chars_per_word"] = 3;
  split["pre_tokenizer"] = {{"type", "WhitespaceSplit"}};
  bare["post_processor"] = nullptr;
  unk["model"]["unk_token"] = "x";
  for (const auto& [bad, needle] : {std::pair{limit, "model.max_input_chars_per_word 3"},
                                    {split, "pre_tokenizer {\"type\":\"WhitespaceSplit\"}"},
                                    {bare, "post_processor null"}, {unk, "model.unk_token \"x\""}}) {
    std::ofstream(dir + "/tokenizer.json", std::ios::trunc) << bad.dump();
    Capture capture;
    c10::WarningUtils::WarningHandlerGuard guard(&capture);
    EXPECT_EQ(WordPieceTokenizer::from_pretrained(dir).encode("Hello, world!"), from_txt.encode("Hello, world!"));
    ASSERT_EQ(capture.seen.size(), 1u) << needle;
    EXPECT_NE(capture.seen[0].find(needle), std::string::npos) << capture.seen[0];
    EXPECT_NE(capture.seen[0].find("not BERT's"), std::string::npos) << capture.seen[0];
  }
}

TEST(BertPretokenize, CharacterClasses) {
  using namespace tessera::text;
  EXPECT_TRUE(bert_is_punctuation(U'$'));   // ASCII symbols count as punctuation
  EXPECT_TRUE(bert_is_punctuation(U'`'));
  EXPECT_TRUE(bert_is_punctuation(0x3001));  // 、
  EXPECT_TRUE(bert_is_punctuation(0x166D));  // Po in Unicode 8.0, So now
  EXPECT_FALSE(bert_is_punctuation(0x2E43)); // Po, but added in Unicode 9.0
  EXPECT_FALSE(bert_is_punctuation(U'a'));
  EXPECT_TRUE(bert_is_control(0x200B));       // Cf
  EXPECT_TRUE(bert_is_control(0xE000));       // Co
  EXPECT_FALSE(bert_is_control(U'\t'));
  EXPECT_TRUE(bert_is_whitespace(0x3000));
  EXPECT_TRUE(bert_is_whitespace(0x0B));
  EXPECT_FALSE(bert_is_whitespace(0x1C));     // Python's isspace says yes; Rust's no
  EXPECT_TRUE(bert_is_chinese_char(0x6771));
  EXPECT_FALSE(bert_is_chinese_char(0x3042)); // あ: hiragana is not split out
  BertNormalizerOptions o;
  EXPECT_EQ(bert_normalize("H\xC3\xA9llo \xE6\x9D\xB1!", o), "hello  \xE6\x9D\xB1 !");
  EXPECT_EQ(bert_normalize("\xEF\xAC\x81", o), "\xEF\xAC\x81");  // ﬁ: NFD, not NFKD
  std::string buf;
  std::vector<BertWord> words;
  bert_pretokenize("Don't  stop\xE2\x80\xA6 na\xC3\xAFve", o, buf, words);
  std::vector<std::string> got;
  for (const BertWord& w : words) got.push_back(buf.substr(w.begin, w.size));
  EXPECT_EQ(got, (std::vector<std::string>{"don", "'", "t", "stop", "\xE2\x80\xA6", "naive"}));
  EXPECT_EQ(words.back().chars, 5u);
}

}  // namespace
