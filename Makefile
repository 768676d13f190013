# The README's commands. Each target does its own setup, idempotently.
#   make demo   — train + evaluate CLIP, a short MAE run, then LLaVA (tiny LM, stage 1, stage 2) that
#                 answers questions about held-out images, on Fashion-MNIST (embedded data)
#   make llava  — the LLaVA part alone (after the CLIP demo), plus stage 2 with LoRA
#   make mim    — VQ-KD, BEiT and feature-target MIM after the demo; make results — their probes
#   make test   — build, GoogleTest (ctest), pytest
PY      := .venv/bin/python
BUILD   := build
# CLIP's BPE merges (MIT), copied at build time from the open_clip package so wheels ship them.
CLIP_BPE := python/tessera/assets/bpe_simple_vocab_16e6.txt.gz
JOBS    ?= $(shell nproc)
export CCACHE_DIR ?= $(HOME)/.cache/ccache

.PHONY: setup build install test test-cpp test-python demo llava llava-stages mim results bench docs clean

setup:
	@bash scripts/setup.sh

build: setup
	@test -f $(BUILD)/build.ninja || .venv/bin/cmake -S . -B $(BUILD) -G Ninja -DPython3_EXECUTABLE=$(PWD)/$(PY)
	@PATH=$(PWD)/.venv/bin:$$PATH cmake --build $(BUILD) --parallel $(JOBS)
	@.venv/bin/cmake --install $(BUILD) --prefix python/tessera > /dev/null
	@test -f $(CLIP_BPE) || $(PY) scripts/ship_clip_merges.py $(CLIP_BPE)
	@test -f .venv/.tessera-editable || { TESSERA_SKIP_CMAKE=1 $(PY) -m pip install -q --no-build-isolation --no-deps -e . \
		&& touch .venv/.tessera-editable; }

install: build

test-cpp: build
	cd $(BUILD) && ctest --output-on-failure --timeout 600

test-python: build
	$(PY) -m pytest -q -x --durations=10

test: test-cpp test-python

demo: build
	$(PY) -m tessera.cli train recipes/fashion_mnist_clip.yaml --out runs/demo
	$(PY) -m tessera.cli train recipes/fashion_mnist_mae.yaml --out runs/demo-mae
	@$(MAKE) --no-print-directory llava-stages

# LLaVA on the CLIP demo's vision tower (~3 minutes on 2 cores): instruction data, a tiny LM,
# stage 1 (projector on captions), stage 2 (projector + LM on questions), then one chat turn.
llava-stages:
	$(PY) -m tessera.data.instruct runs/data/llava
	$(PY) -m tessera.cli train recipes/fashion_mnist_lm.yaml --out runs/demo-lm
	$(PY) -m tessera.cli train recipes/fashion_mnist_llava_stage1.yaml --out runs/demo-llava1
	$(PY) -m tessera.cli train recipes/fashion_mnist_llava_stage2.yaml --out runs/demo-llava2
	$(PY) -m tessera.cli chat runs/demo-llava2 --image runs/data/llava/images/fashion/test/00001.png \
		-q "What is this item?"

llava: build
	@test -d runs/demo/checkpoints || $(MAKE) demo
	@test -d runs/demo-llava2/checkpoints || $(MAKE) --no-print-directory llava-stages
	$(PY) -m tessera.cli train recipes/fashion_mnist_llava_lora.yaml --out runs/demo-llava-lora

# Masked image modeling after the demo (its CLIP model is the teacher): VQ-KD tokenizer, BEiT on
# its tokens, feature-target MIM; ~5 minutes on 2 cores.
mim: build
	@test -d runs/demo/checkpoints || $(MAKE) demo
	$(PY) -m tessera.cli train recipes/fashion_mnist_vqkd.yaml --out runs/demo-vqkd
	$(PY) -m tessera.cli train recipes/fashion_mnist_beit.yaml --out runs/demo-beit
	$(PY) -m tessera.cli train recipes/fashion_mnist_mim_features.yaml --out runs/demo-mimf

# The linear-probe / k-NN table of docs/results.md.
results: build
	@test -d runs/demo-mimf/checkpoints || $(MAKE) mim
	$(PY) scripts/probe_table.py

bench: build
	$(PY) benchmarks/vit_cpu.py
	$(PY) benchmarks/tokenizer_speed.py

clean:
	rm -rf $(BUILD) python/tessera/_C*.so python/tessera/lib python/tessera/include

# ---- checkpoint torture (docs/reliability.md "Torture"): SIGKILL + resume under ddp and fsdp2,
#      disk full, two runs on one folder. TORTURE_RUNS kills per strategy (default 50),
#      TORTURE_MINUTES caps the killing (default 30).
.PHONY: torture
torture: build
	OMP_NUM_THREADS=1 nice $(PY) scripts/torture.py --runs $${TORTURE_RUNS:-50} --json build/torture.json
