// Python bindings of csrc/tessera/text as tessera._C.text, written to pybind11's documented
// patterns (classes, GIL release, exception translation) and torch's tensor caster.
#include "bindings.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cerrno>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <map>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "tessera/text/clip_tokenizer.h"
#include "tessera/core/regular_file.h"
#include "tessera/text/sentencepiece_tokenizer.h"
#include "tessera/text/sentencepiece_trainer.h"
#include "tessera/text/wordpiece_tokenizer.h"

namespace py = pybind11;
using tessera::text::ClipTokenizer;
using tessera::text::SentencePieceTokenizer;
using tessera::text::WordPieceTokenizer;
using tessera::python::without_gil;

namespace {

// FileNotFoundError(errno, message, filename), the way open() raises it, so callers can
// catch it as OSError and read `.filename`. pybind11 has no builtin for it.
[[noreturn]] void raise_file_not_found(const std::string& message, const std::string& path) {
  py::object exc = py::reinterpret_borrow<py::object>(PyExc_FileNotFoundError)(
      ENOENT, message, path);
  PyErr_SetObject(PyExc_FileNotFoundError, exc.ptr());
  throw py::error_already_set();
}

void require_file(const std::string& path, const char* what) {
  tessera::core::require_regular_file(path, what);  // before the probe: opening a FIFO blocks
  if (!std::ifstream(path, std::ios::binary).good())
    raise_file_not_found(std::string(what) + " not found", path);
}


// Decoded text as str, with any ill-formed UTF-8 replaced rather than raising.
py::str utf8_str(const std::string& s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
  if (o == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(o);
}

void bind_clip_tokenizer(py::module_& m) {
  py::class_<ClipTokenizer>(m, "ClipTokenizer", R"doc(
CLIP byte-level BPE tokenizer, id-for-id equal to open_clip's SimpleTokenizer.

    tok = ClipTokenizer("bpe_simple_vocab_16e6.txt.gz")
    tok.encode("a photo of a cat")      # [320, 1125, 539, 320, 2368]
    tok.tokenize(["a photo of a cat"])  # LongTensor [1, 77]
)doc")
      .def(py::init([](const std::string& path) {
             require_file(path, "CLIP BPE merges file");
             return std::make_unique<ClipTokenizer>(path);
           }),
           py::arg("path"), "Load the merges file (bpe_simple_vocab_16e6.txt.gz).")
      .def(
          "encode",
          [](const ClipTokenizer& t, const std::string& text) {
            return t.encode(text);
          },
          py::arg("text"), "Token ids of one text, without start/end tokens.")
      .def(
          "encode_batch",
          [](const ClipTokenizer& t, const std::vector<std::string>& texts) {
            return without_gil([&] { return t.encode_batch(texts); });
          },
          py::arg("texts"), "encode() of each text, in parallel threads.")
      .def(
          "decode",
          [](const ClipTokenizer& t, const std::vector<int64_t>& ids) {
            return utf8_str(t.decode(ids));
          },
          py::arg("ids"), "Text of the ids; each end of word becomes a space.")
      .def(
          "tokenize",
          [](const ClipTokenizer& t, const std::vector<std::string>& texts,
             int64_t context_length) {
            return without_gil([&] { return t.tokenize(texts, context_length); });
          },
          py::arg("texts"), py::arg("context_length") = 77,
          "LongTensor [len(texts), context_length]: start, ids, end, zero padding; a text "
          "too long is cut and ends with the end token.")
      .def("sot_token_id", &ClipTokenizer::sot_token_id)
      .def("eot_token_id", &ClipTokenizer::eot_token_id)
      .def("vocab_size", &ClipTokenizer::vocab_size);
}

void bind_sentencepiece(py::module_& m) {
  py::class_<SentencePieceTokenizer>(m, "SentencePieceTokenizer", R"doc(
SentencePiece model (e.g. LLaMA's tokenizer.model) over libsentencepiece.

    sp = SentencePieceTokenizer("tokenizer.model")
    sp.encode("Hello world!")  # [1, 15043, 3186, 29991]
)doc")
      .def(py::init([](const std::string& path) {
             require_file(path, "SentencePiece model file");
             return (
                 [&] { return std::make_unique<SentencePieceTokenizer>(path); })();
           }),
           py::arg("path"))
      .def(
          "encode",
          [](const SentencePieceTokenizer& t, const std::string& text, bool add_bos,
             bool add_eos) {
            return without_gil([&] { return t.encode(text, add_bos, add_eos); });
          },
          py::arg("text"), py::arg("add_bos") = true, py::arg("add_eos") = false)
      .def(
          "decode",
          [](const SentencePieceTokenizer& t, const std::vector<int64_t>& ids) {
            return utf8_str(t.decode(ids));
          },
          py::arg("ids"))
      .def("bos_id", &SentencePieceTokenizer::bos_id)
      .def("eos_id", &SentencePieceTokenizer::eos_id)
      .def("pad_id", &SentencePieceTokenizer::pad_id)
      .def("unk_id", &SentencePieceTokenizer::unk_id)
      .def("vocab_size", &SentencePieceTokenizer::vocab_size)
      .def(
          "id_to_piece",
          [](const SentencePieceTokenizer& t, int64_t id) {
            return utf8_str(t.id_to_piece(id));
          },
          py::arg("id"))
      .def("piece_to_id", &SentencePieceTokenizer::piece_to_id, py::arg("piece"));
}

// The core's std exceptions as the c10 errors the one translator of tessera._C maps
// (ValueError, IndexError).
template <class F>
auto c10_errors(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    C10_THROW_ERROR(ValueError, e.what());
  } catch (const std::out_of_range& e) {
    C10_THROW_ERROR(IndexError, e.what());
  }
}

// UTF-8 views of the str items of `texts`, without copying: CPython keeps each str's UTF-8
// form, and `keep` (a tuple of the items) keeps the strs alive while the GIL is released.
// Refuses what _as_text in tessera/text.py refuses, in its words.
std::vector<std::string_view> utf8_views(py::handle texts, py::tuple& keep) {
  keep = py::reinterpret_steal<py::tuple>(PySequence_Tuple(texts.ptr()));
  if (!keep) throw py::error_already_set();
  std::vector<std::string_view> views;
  views.reserve(keep.size());
  for (size_t i = 0; i < keep.size(); ++i) {
    PyObject* o = PyTuple_GET_ITEM(keep.ptr(), static_cast<Py_ssize_t>(i));
    if (!PyUnicode_Check(o)) {
      const std::string what = py::repr(o).cast<std::string>().substr(0, 120);
      throw py::type_error("text " + std::to_string(i) + " must be a str, got " +
                           Py_TYPE(o)->tp_name + ": " + what);
    }
    Py_ssize_t n = 0;
    const char* p = PyUnicode_AsUTF8AndSize(o, &n);
    if (p == nullptr) {
      PyErr_Clear();
      throw py::value_error("text " + std::to_string(i) + " is not valid UTF-8 text (it holds "
                            "lone surrogates); decode the input as UTF-8 first");
    }
    views.emplace_back(p, static_cast<size_t>(n));
  }
  return views;
}

tessera::text::WordPieceEncodeOptions encode_options(bool add_special_tokens, int64_t max_length,
                                                     bool truncate_left) {
  tessera::text::WordPieceEncodeOptions o;
  o.add_special_tokens = add_special_tokens;
  o.max_length = max_length;
  o.truncate_left = truncate_left;
  return o;
}

int encode_threads() { return static_cast<int>(at::get_num_threads()); }

void bind_wordpiece(py::module_& m) {
  py::class_<WordPieceTokenizer>(m, "WordPieceTokenizer", R"doc(
BERT WordPiece tokenizer, id-for-id equal to transformers' BertTokenizerFast.

    tok = WordPieceTokenizer("vocab.txt", do_lower_case=True)
    tok.encode("Hello, world!")            # [101, 7592, 1010, 2088, 999, 102]
    ids, mask = tok.encode_padded(["a", "b c"], pad_to=0)  # LongTensors [2, longest]
)doc")
      .def(py::init([](const std::string& vocab_file, bool do_lower_case,
                       std::optional<bool> strip_accents, bool tokenize_chinese_chars,
                       std::string unk_token, std::string sep_token, std::string pad_token,
                       std::string cls_token, std::string mask_token,
                       int64_t max_input_chars_per_word) {
             tessera::text::WordPieceOptions o;
             o.do_lower_case = do_lower_case;
             o.strip_accents = strip_accents;
             o.tokenize_chinese_chars = tokenize_chinese_chars;
             o.unk_token = std::move(unk_token);
             o.sep_token = std::move(sep_token);
             o.pad_token = std::move(pad_token);
             o.cls_token = std::move(cls_token);
             o.mask_token = std::move(mask_token);
             o.max_input_chars_per_word = max_input_chars_per_word;
             return c10_errors([&] { return std::make_unique<WordPieceTokenizer>(vocab_file, o); });
           }),
           py::arg("vocab_file"), py::arg("do_lower_case") = true,
           py::arg("strip_accents") = py::none(), py::arg("tokenize_chinese_chars") = true,
           py::arg("unk_token") = "[UNK]", py::arg("sep_token") = "[SEP]",
           py::arg("pad_token") = "[PAD]", py::arg("cls_token") = "[CLS]",
           py::arg("mask_token") = "[MASK]", py::arg("max_input_chars_per_word") = 100,
           "Load a vocab.txt (one token per line, id = line number).")
      .def_static(
          "from_pretrained",
          [](const std::string& folder) {
            return c10_errors([&] { return WordPieceTokenizer::from_pretrained(folder); });
          },
          py::arg("folder"), "vocab.txt plus the flags and added tokens of tokenizer_config.json.")
      .def(
          "add_special_token",
          [](WordPieceTokenizer& t, const std::string& token) {
            return c10_errors([&] { return t.add_special_token(token); });
          },
          py::arg("token"), "Make a token special (kept whole in text); returns its id.")
      .def(
          "encode",
          [](const WordPieceTokenizer& t, py::handle text, bool add_special_tokens,
             int64_t max_length, bool truncate_left) {
            py::tuple keep;
            const auto views = utf8_views(py::make_tuple(text), keep);
            const auto o = encode_options(add_special_tokens, max_length, truncate_left);
            return without_gil([&] { return c10_errors([&] { return t.encode(views[0], o); }); });
          },
          py::arg("text"), py::arg("add_special_tokens") = true, py::arg("max_length") = -1,
          py::arg("truncate_left") = false)
      .def(
          "encode_batch",
          [](const WordPieceTokenizer& t, py::handle texts, bool add_special_tokens,
             int64_t max_length, bool truncate_left) {
            py::tuple keep;
            const auto views = utf8_views(texts, keep);
            const auto o = encode_options(add_special_tokens, max_length, truncate_left);
            const auto batch = without_gil(
                [&] { return c10_errors([&] { return t.encode_batch(views, o, encode_threads()); }); });
            py::list rows(batch.rows());
            for (int64_t r = 0; r < batch.rows(); ++r) {
              py::list row(batch.length(r));
              for (int64_t k = 0; k < batch.length(r); ++k)
                PyList_SET_ITEM(row.ptr(), k, PyLong_FromLong(batch.ids[size_t(batch.offsets[size_t(r)] + k)]));
              PyList_SET_ITEM(rows.ptr(), r, row.release().ptr());
            }
            return rows;
          },
          py::arg("texts"), py::arg("add_special_tokens") = true, py::arg("max_length") = -1,
          py::arg("truncate_left") = false, "Ragged ids, one list per text, in parallel threads.")
      .def(
          "encode_padded",
          [](const WordPieceTokenizer& t, py::handle texts, bool add_special_tokens,
             int64_t max_length, bool truncate_left, int64_t pad_to, int64_t pad_to_multiple_of,
             bool pad_left) {
            py::tuple keep;
            const auto views = utf8_views(texts, keep);
            const auto o = encode_options(add_special_tokens, max_length, truncate_left);
            return without_gil([&] {
              const auto batch = c10_errors([&] { return t.encode_batch(views, o, encode_threads()); });
              const int64_t longest = batch.longest();
              int64_t width = pad_to > 0 ? pad_to : longest;
              if (pad_to < 0) {  // no padding: every row must be as long as the first
                for (int64_t r = 0; r < batch.rows(); ++r)
                  TORCH_CHECK_VALUE(batch.length(r) == longest, "Unable to create tensor: text ", r,
                                    " has ", batch.length(r), " tokens and another ", longest,
                                    "; pass padding=True (and truncation=True) to get tensors of one length");
              }
              TORCH_CHECK_VALUE(longest <= width, "Unable to create tensor: a text has ", longest,
                                " tokens, more than padding to max_length=", width,
                                " allows; pass truncation=True");
              // No model reads rows this long; past it a width is a mistake (and rounding up
              // to a huge multiple overflowed to 0 columns).
              constexpr int64_t kMaxWidth = int64_t{1} << 24;
              TORCH_CHECK_VALUE(width <= kMaxWidth, "padding to max_length=", width, " tokens: more than ",
                                kMaxWidth, " per row; give a smaller max_length");
              if (pad_to_multiple_of > 1) {
                TORCH_CHECK_VALUE(pad_to_multiple_of <= kMaxWidth, "pad_to_multiple_of=", pad_to_multiple_of,
                                  ": more than ", kMaxWidth, " tokens per row");
                width = (width + pad_to_multiple_of - 1) / pad_to_multiple_of * pad_to_multiple_of;
              }
              at::Tensor ids = at::empty({batch.rows(), width}, at::kLong);
              at::Tensor mask = at::empty({batch.rows(), width}, at::kLong);
              batch.pad_into(width, t.pad_token_id(), pad_left, ids.data_ptr<int64_t>(),
                             mask.data_ptr<int64_t>());
              return std::make_pair(ids, mask);
            });
          },
          py::arg("texts"), py::arg("add_special_tokens") = true, py::arg("max_length") = -1,
          py::arg("truncate_left") = false, py::arg("pad_to") = 0, py::arg("pad_to_multiple_of") = 0,
          py::arg("pad_left") = false,
          "(input_ids, attention_mask) LongTensors [len(texts), width]: width is pad_to, or the "
          "longest row when pad_to == 0, rounded up to pad_to_multiple_of; pad_to < 0 asks for "
          "no padding (all rows must then have one length).")
      .def(
          "tokenize",
          [](const WordPieceTokenizer& t, py::handle text) {
            py::tuple keep;
            const auto views = utf8_views(py::make_tuple(text), keep);
            const auto tokens = without_gil([&] { return t.tokenize(views[0]); });
            py::list out;
            for (const std::string& s : tokens) out.append(utf8_str(s));
            return out;
          },
          py::arg("text"), "Token strings of one text, without [CLS]/[SEP].")
      .def(
          "decode",
          [](const WordPieceTokenizer& t, const std::vector<int64_t>& ids, bool skip_special_tokens,
             bool clean_up_tokenization_spaces) {
            return utf8_str(c10_errors(
                [&] { return t.decode(ids, skip_special_tokens, clean_up_tokenization_spaces); }));
          },
          py::arg("ids"), py::arg("skip_special_tokens") = false,
          py::arg("clean_up_tokenization_spaces") = true)
      .def(
          "decode_batch",
          [](const WordPieceTokenizer& t, const std::vector<std::vector<int64_t>>& rows,
             bool skip_special_tokens, bool clean_up_tokenization_spaces) {
            py::list out;
            for (const auto& ids : rows)
              out.append(utf8_str(c10_errors(
                  [&] { return t.decode(ids, skip_special_tokens, clean_up_tokenization_spaces); })));
            return out;
          },
          py::arg("rows"), py::arg("skip_special_tokens") = false,
          py::arg("clean_up_tokenization_spaces") = true)
      .def("token_to_id", &WordPieceTokenizer::token_to_id, py::arg("token"),
           "The id of a token, or -1.")
      .def(
          "id_to_token",
          [](const WordPieceTokenizer& t, int64_t id) {
            return utf8_str(c10_errors([&] { return t.id_to_token(id); }));
          },
          py::arg("id"))
      .def("is_special", &WordPieceTokenizer::is_special, py::arg("id"))
      .def("special_ids", &WordPieceTokenizer::special_ids)
      .def("vocab_size", &WordPieceTokenizer::vocab_size)
      .def("size", &WordPieceTokenizer::size)
      .def("unk_token_id", &WordPieceTokenizer::unk_token_id)
      .def("sep_token_id", &WordPieceTokenizer::sep_token_id)
      .def("pad_token_id", &WordPieceTokenizer::pad_token_id)
      .def("cls_token_id", &WordPieceTokenizer::cls_token_id)
      .def("mask_token_id", &WordPieceTokenizer::mask_token_id)
      .def("do_lower_case", [](const WordPieceTokenizer& t) { return t.options().do_lower_case; })
      .def("strip_accents", [](const WordPieceTokenizer& t) { return t.options().strip_accents; })
      .def("tokenize_chinese_chars",
           [](const WordPieceTokenizer& t) { return t.options().tokenize_chinese_chars; })
      .def("vocab_path", &WordPieceTokenizer::vocab_path);
}

}  // namespace

namespace tessera::python {
void bind_text(py::module_& m) {
  m.doc() = "Tokenizers: CLIP byte-level BPE, SentencePiece and BERT WordPiece.";
  bind_clip_tokenizer(m);
  bind_sentencepiece(m);
  bind_wordpiece(m);
  m.def("train_sentencepiece",
        [](const std::vector<std::string>& sentences, const std::map<std::string, std::string>& options) {
          return py::bytes(without_gil([&] { return tessera::text::train_sentencepiece(sentences, options); }));
        },
        py::arg("sentences"), py::arg("options"),
        "Serialized SentencePiece model trained on the sentences; options are spm_train's flags.");
}
namespace {
const bool registered = register_submodule("text", "CLIP BPE, sentencepiece and WordPiece tokenizers", &bind_text, 2);
}  // namespace

}  // namespace tessera::python
