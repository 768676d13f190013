// Python bindings of csrc/tessera/text as tessera._C.text, written to pybind11's documented
// patterns (classes, GIL release, exception translation) and torch's tensor caster.
#include "bindings.h"

#include <c10/util/Exception.h>

#include <cerrno>
#include <map>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "tessera/text/clip_tokenizer.h"
#include "tessera/text/sentencepiece_tokenizer.h"
#include "tessera/text/sentencepiece_trainer.h"

namespace py = pybind11;
using tessera::text::ClipTokenizer;
using tessera::text::SentencePieceTokenizer;
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

}  // namespace

namespace tessera::python {
void bind_text(py::module_& m) {
  m.doc() = "Tokenizers: CLIP byte-level BPE and SentencePiece.";
  bind_clip_tokenizer(m);
  bind_sentencepiece(m);
  m.def("train_sentencepiece",
        [](const std::vector<std::string>& sentences, const std::map<std::string, std::string>& options) {
          return py::bytes(without_gil([&] { return tessera::text::train_sentencepiece(sentences, options); }));
        },
        py::arg("sentences"), py::arg("options"),
        "Serialized SentencePiece model trained on the sentences; options are spm_train's flags.");
}
namespace {
const bool registered = register_submodule("text", "CLIP BPE and sentencepiece tokenizers", &bind_text, 2);
}  // namespace

}  // namespace tessera::python
