# The README's commands. Each target does its own setup, idempotently.
#   make demo   — train + evaluate CLIP, a short MAE run, then LLaVA (tiny LM, stage 1, stage 2) that
#                 answers questions about held-out images, on Fashion-MNIST (embedded data)
#   make llava  — the LLaVA part alone (after the CLIP demo), plus stage 2 with LoRA
#   make blip2  — BLIP-2 stage 1 on the CLIP demo's tower, then stage 2 through LLaVA (Q-Former projector)
#   make sugar  — Sugar (L_g + alpha L_d) and its L_g-only twin on the demo's LLaVA, interleaved data
#   make mim    — VQ-KD, BEiT and feature-target MIM after the demo; make results — their probes
#   make clip-shards — the CLIP demo on webdataset shards; make llava-stages — LLaVA's two stages alone
#   make test   — build, GoogleTest (ctest), pytest; make test-long — the checks that need minutes
PY      := .venv/bin/python
BUILD   := build
# CLIP's BPE merges (MIT), copied at build time from the open_clip package so wheels ship them.
CLIP_BPE := python/tessera/assets/bpe_simple_vocab_16e6.txt.gz
JOBS    ?= $(shell nproc)
# pytest workers (pytest-xdist): one per core, at most 4 (each holds torch and transformers, ~1.5 GiB)
TEST_JOBS ?= $(shell n=$$(nproc); echo $$(( n < 4 ? n : 4 )))
export CCACHE_DIR ?= $(HOME)/.cache/ccache

.PHONY: setup build install test test-cpp test-python test-long demo llava llava-stages blip2 sugar mim results bench clean \
	sanitize fuzz fuzz-build fuzz-regressions

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
	$(PY) -m pytest -q -x -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder --durations=10 -m "not long"

test: test-cpp test-python

# The checks that need minutes (pytest marker `long`); CI runs them after `make test`.
test-long: build
	$(PY) -m pytest -q -x -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder --durations=10 -m long

demo: build
	$(PY) -m tessera.cli train recipes/fashion_mnist_clip.yaml --out runs/demo --overwrite
	$(PY) -m tessera.cli train recipes/fashion_mnist_mae.yaml --out runs/demo-mae --overwrite
	@$(MAKE) --no-print-directory llava-stages

# LLaVA on the CLIP demo's vision tower (~3 minutes on 2 cores): instruction data, a tiny LM,
# stage 1 (projector on captions), stage 2 (projector + LM on questions), then one chat turn.
llava-stages:
	$(PY) -m tessera.data.instruct runs/data/llava
	$(PY) -m tessera.cli train recipes/fashion_mnist_lm.yaml --out runs/demo-lm --overwrite
	$(PY) -m tessera.cli train recipes/fashion_mnist_llava_stage1.yaml --out runs/demo-llava1 --overwrite
	$(PY) -m tessera.cli train recipes/fashion_mnist_llava_stage2.yaml --out runs/demo-llava2 --overwrite
	$(PY) -m tessera.cli chat runs/demo-llava2 --image runs/data/llava/images/fashion/test/00001.png \
		-q "What is this item?"

# BLIP-2 after the demo (its CLIP tower and tiny LM): stage 1 (ITC, ITM, ITG on the frozen tower),
# then stage 2 through LLaVA's task with the Q-Former as projector (captions, then instructions:
# LLaVA's stage-2 recipe with the Q-Former), and one chat turn.
blip2: build
	@test -d runs/demo/checkpoints || $(MAKE) demo
	@test -d runs/demo-lm/checkpoints || $(MAKE) --no-print-directory llava-stages
	$(PY) -m tessera.cli train recipes/fashion_mnist_blip2_stage1.yaml --out runs/demo-blip2 --overwrite
	$(PY) -m tessera.cli train recipes/fashion_mnist_blip2_stage2.yaml --out runs/demo-blip2-stage2 --overwrite
	$(PY) scripts/caption_names_class.py runs/demo-blip2-stage2 runs/data/llava/heldout.json --prefix "A photo of a"
	$(PY) -m tessera.cli train recipes/fashion_mnist_blip2_instruct.yaml --out runs/demo-blip2-instruct --overwrite
	$(PY) -m tessera.cli chat runs/demo-blip2-instruct --image runs/data/llava/images/fashion/test/00001.png \
		-q "What is this item?"

llava: build
	@test -d runs/demo/checkpoints || $(MAKE) demo
	@test -d runs/demo-llava2/checkpoints || $(MAKE) --no-print-directory llava-stages
	$(PY) -m tessera.cli train recipes/fashion_mnist_llava_lora.yaml --out runs/demo-llava-lora --overwrite

# Sugar after the demo (its LLaVA is the start, its CLIP and MAE runs give the targets): the
# interleaved data, Sugar and its L_g-only twin (same data, steps, LoRA), then "What is this item?"
# through LLaVA's chat evaluation on both (their checkpoints are plain LLaVAs).
sugar: build
	@test -d runs/demo/checkpoints || $(MAKE) demo
	@test -d runs/demo-mae/checkpoints || $(PY) -m tessera.cli train recipes/fashion_mnist_mae.yaml --out runs/demo-mae --overwrite
	@test -d runs/demo-llava2/checkpoints || $(MAKE) --no-print-directory llava-stages
	$(PY) -m tessera.data.interleaved runs/data/interleaved
	$(PY) -m tessera.cli train recipes/fashion_mnist_sugar.yaml --out runs/demo-sugar --overwrite
	$(PY) -m tessera.cli train recipes/fashion_mnist_sugar_lg_only.yaml --out runs/demo-sugar-lg-only --overwrite
	$(PY) -m tessera.cli eval runs/demo-sugar --recipe recipes/fashion_mnist_llava_lora.yaml --set eval.max_samples=300
	$(PY) -m tessera.cli eval runs/demo-sugar-lg-only --recipe recipes/fashion_mnist_llava_lora.yaml --set eval.max_samples=300

# The CLIP demo on webdataset shards written from Fashion-MNIST (python -m tessera.data.shards).
clip-shards: build
	@test -f runs/data/shards/test-00009.tar || { $(PY) -m tessera.data.shards runs/data/shards --fashion-mnist /usr/share/datasets/fashion-mnist --split train --maxcount 1000 && $(PY) -m tessera.data.shards runs/data/shards --fashion-mnist /usr/share/datasets/fashion-mnist --split test --maxcount 1000; }
	$(PY) -m tessera.cli train recipes/fashion_mnist_clip_shards.yaml --out runs/demo-clip-shards --overwrite

# Masked image modeling after the demo (its CLIP model is the teacher): VQ-KD tokenizer, BEiT on
# its tokens, feature-target MIM; ~5 minutes on 2 cores.
mim: build
	@test -d runs/demo/checkpoints || $(MAKE) demo
	$(PY) -m tessera.cli train recipes/fashion_mnist_vqkd.yaml --out runs/demo-vqkd --overwrite
	$(PY) -m tessera.cli train recipes/fashion_mnist_beit.yaml --out runs/demo-beit --overwrite
	$(PY) -m tessera.cli train recipes/fashion_mnist_mim_features.yaml --out runs/demo-mimf --overwrite

# The linear-probe / k-NN table of docs/results.md.
results: build
	@test -d runs/demo-mimf/checkpoints || $(MAKE) mim
	$(PY) scripts/probe_table.py

bench: build
	$(PY) benchmarks/vit_cpu.py
	$(PY) benchmarks/tokenizer_speed.py

clean:
	rm -rf $(BUILD) python/tessera/_C*.so python/tessera/lib python/tessera/include

# ---- hardening (docs/reliability.md): sanitizers and fuzzing, each in its own build folder ----
#   make sanitize  — library + GoogleTest + fuzz regression replay built with ASan/UBSan (clang),
#                    ctest under them (any report fails the run)
#   make fuzz      — libFuzzer (clang) on every parser for FUZZ_SECONDS each, corpora seeded from
#                    ../shared; findings land in build-fuzz/findings/<target>/
ASAN_BUILD   := build-asan
FUZZ_BUILD   := build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_RSS_MB  ?= 2048
# target:max_len — -max_len big enough for real headers and images, small enough to stay fast.
FUZZ_PLAN    := safetensors:16384 json_config:8192 caption_file:4096 idx_file:4096 image_decode:65536 \
	clip_tokenizer:1024 sentencepiece:1024 tar_reader:8192 json_records:4096
FUZZ_TARGETS := $(foreach p,$(FUZZ_PLAN),$(firstword $(subst :, ,$(p))))
# One source per translation unit here (the main build batches 8): each must include what it uses.
HARDEN_CMAKE = .venv/bin/cmake -G Ninja -DPython3_EXECUTABLE=$(PWD)/$(PY) -DTESSERA_BUILD_PYTHON=OFF \
	-DTESSERA_BUILD_EXAMPLES=OFF -DTESSERA_UNITY_BUILD=OFF
# ccache skips compiles that use a precompiled header unless told these are safe; the base dir
# lets a fresh clone at another path hit the cache of an earlier one.
HARDEN_CCACHE = CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime \
	CCACHE_BASEDIR=$(PWD)
SANITIZER_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_odr_violation=0 \
	LSAN_OPTIONS=suppressions=$(PWD)/fuzz/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

# clang, as build-fuzz: the same sanitizer runtime that ran the whole ctest suite clean there.
sanitize: setup
	@command -v clang++ > /dev/null || { apt-get install -y clang > /dev/null 2>&1 || sudo apt-get install -y clang; }
	@test -f $(ASAN_BUILD)/build.ninja || $(HARDEN_CMAKE) -S . -B $(ASAN_BUILD) -DCMAKE_CXX_COMPILER=clang++ \
		-DTESSERA_SANITIZE=ON -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG"
	@PATH=$(PWD)/.venv/bin:$$PATH $(HARDEN_CCACHE) nice -n 10 cmake --build $(ASAN_BUILD) --parallel $(JOBS)
	cd $(ASAN_BUILD) && $(SANITIZER_ENV) ctest --output-on-failure --timeout 1200

fuzz-build: setup
	@command -v clang++ > /dev/null || { apt-get install -y clang > /dev/null 2>&1 || sudo apt-get install -y clang; }
	@test -f $(FUZZ_BUILD)/build.ninja || $(HARDEN_CMAKE) -S . -B $(FUZZ_BUILD) -DCMAKE_CXX_COMPILER=clang++ \
		-DTESSERA_FUZZ=ON -DTESSERA_BUILD_TESTS=OFF
	@PATH=$(PWD)/.venv/bin:$$PATH $(HARDEN_CCACHE) nice -n 10 cmake --build $(FUZZ_BUILD) --parallel $(JOBS)

# Each target: replay its regressions, then fuzz from the seeds plus what earlier runs found.
fuzz: fuzz-build
	@$(PY) fuzz/seed_corpus.py $(FUZZ_BUILD)/corpus
	@set -e; for plan in $(FUZZ_PLAN); do t=$${plan%%:*}; len=$${plan##*:}; \
		mkdir -p $(FUZZ_BUILD)/findings/$$t $(FUZZ_BUILD)/corpus/$$t; \
		$(SANITIZER_ENV) $(FUZZ_BUILD)/fuzz/fuzz_$$t fuzz/regressions/$$t/* > $(FUZZ_BUILD)/findings/$$t/replay.log 2>&1 \
			|| { tail -30 $(FUZZ_BUILD)/findings/$$t/replay.log; exit 1; }; \
		echo "fuzz $$t: $(FUZZ_SECONDS) s"; \
		$(SANITIZER_ENV) nice -n 10 $(FUZZ_BUILD)/fuzz/fuzz_$$t $(FUZZ_BUILD)/corpus/$$t \
			-max_total_time=$(FUZZ_SECONDS) -max_len=$$len -rss_limit_mb=$(FUZZ_RSS_MB) \
			-timeout=10 -print_final_stats=1 -artifact_prefix=$(FUZZ_BUILD)/findings/$$t/ \
			> $(FUZZ_BUILD)/findings/$$t/fuzz.log 2>&1 || { tail -60 $(FUZZ_BUILD)/findings/$$t/fuzz.log; exit 1; }; \
		grep -E "stat::number_of_executed_units|stat::average_exec_per_sec" $(FUZZ_BUILD)/findings/$$t/fuzz.log; \
	done

# Only the committed regression inputs through the fuzz build (seconds; the plain replay is in ctest).
fuzz-regressions: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
		$(SANITIZER_ENV) $(FUZZ_BUILD)/fuzz/fuzz_$$t fuzz/regressions/$$t/* 2>&1 | tail -1; done

# ---- checkpoint torture (docs/reliability.md "Torture"): SIGKILL + resume under ddp and fsdp2,
#      disk full, two runs on one folder. TORTURE_RUNS kills per strategy (default 50),
#      TORTURE_MINUTES caps the killing (default 30).
.PHONY: torture
torture: build
	OMP_NUM_THREADS=1 nice $(PY) scripts/torture.py --runs $${TORTURE_RUNS:-50} --json build/torture.json
