// Embeds images and texts with a CLIP checkpoint from C++ alone (no Python): load an HF folder,
// tokenize with the CLIP BPE, decode + transform images, print the image x text similarities.
//
//   clip_embed <checkpoint_dir> <bpe_simple_vocab_16e6.txt.gz> [--image a.png ...] "a photo of a cat" ...
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "tessera/core/pretrained.h"
#include "tessera/models/clip/clip_model.h"
#include "tessera/text/clip_tokenizer.h"
#include "tessera/vision/image_decode.h"
#include "tessera/vision/image_transform.h"

#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s <checkpoint_dir> <bpe.txt.gz> [--image FILE ...] TEXT [TEXT ...]\n", argv[0]);
    return 2;
  }
  try {
    const std::string dir = argv[1];
    std::vector<std::string> images, texts;
    for (int i = 3; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--image" && i + 1 < argc) images.push_back(argv[++i]);
      else texts.push_back(a);
    }
    using namespace tessera;
    models::ClipModel clip(models::ClipOptions::from_file(dir + "/config.json"));
    core::load_pretrained_weights(*clip, dir);
    clip->eval();
    at::NoGradGuard no_grad;

    text::ClipTokenizer tokenizer(argv[2]);
    const int64_t ctx = clip->options.text.max_position_embeddings();
    at::Tensor ids = tokenizer.tokenize(texts, ctx);
    at::Tensor text_emb = clip->get_text_features(ids);
    text_emb = text_emb / text_emb.norm(2, -1, true);
    std::printf("text embeddings: %ld x %ld\n", static_cast<long>(text_emb.size(0)), static_cast<long>(text_emb.size(1)));
    if (images.empty()) return 0;

    vision::ImageTransform transform(vision::TransformOptions().image_size(clip->options.vision.image_size()));
    at::Generator gen = at::detail::createCPUGenerator(0);
    std::vector<at::Tensor> pixels;
    for (const auto& path : images) pixels.push_back(transform.apply(vision::read_image(path), gen));
    at::Tensor image_emb = clip->get_image_features(at::stack(pixels));
    image_emb = image_emb / image_emb.norm(2, -1, true);
    at::Tensor probs = (clip->logit_scale().exp() * image_emb.matmul(text_emb.t())).softmax(-1);
    for (size_t i = 0; i < images.size(); ++i) {
      std::printf("%s\n", images[i].c_str());
      for (size_t j = 0; j < texts.size(); ++j)
        std::printf("  %.4f  %s\n", probs[i][j].item<double>(), texts[j].c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "clip_embed: %s\n", e.what());
    return 1;
  }
  return 0;
}
