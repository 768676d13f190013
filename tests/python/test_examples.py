"""The C++ example program examples/clip_embed.cpp gives the same probabilities as Python."""
import os
import pathlib
import subprocess

import numpy as np
import pytest
import torch

import tessera

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXE = ROOT / "build" / "examples" / "clip_embed"


@pytest.mark.skipif(not EXE.exists(), reason="examples not built")
def test_clip_embed_example_matches_python(tmp_path):
    from PIL import Image

    cfg = tessera.get_model_config("ViT-B-32")
    cfg["vision_config"].update(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=32, patch_size=16)
    cfg["text_config"].update(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    cfg["projection_dim"] = 16
    model = tessera.CLIPModel(cfg).eval()
    model.save_pretrained(str(tmp_path / "ckpt"))
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    texts = ["a photo of a cat", "a diagram"]
    bpe = tessera.ClipTokenizer().vocab_path
    run = subprocess.run([str(EXE), str(tmp_path / "ckpt"), str(bpe), "--image", str(tmp_path / "x.png"), *texts],
                         capture_output=True, text=True, check=True)
    probs = [float(line.split()[0]) for line in run.stdout.splitlines() if line.startswith("  ")]
    pixels = torch.from_numpy(img).permute(2, 0, 1).float().div(255)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    with torch.no_grad():
        out = model(input_ids=tessera.tokenize(texts, 77), pixel_values=((pixels - mean) / std)[None])
    expected = out.logits_per_image.softmax(-1)[0].tolist()
    assert probs == pytest.approx(expected, abs=1e-4)
    bad = subprocess.run([str(EXE), str(tmp_path / "missing"), str(bpe), "x"], capture_output=True, text=True)
    assert bad.returncode == 1 and "missing" in bad.stderr
