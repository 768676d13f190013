#!/usr/bin/env bash
# The GPU check in one run, on the device machine (bare CUDA image: python3 with torch 2.11
# cu130, CMake, ninja, nvcc; none of the Debian libraries tessera links, no package registry):
#   bash scripts/device_check.sh REPORT_DIR          (the device tool: carry .device, REPORT_DIR=$OUT)
# after `bash scripts/device_bundle.sh` here filled .device/ (bundle + wheels). Phases: env,
# wheels, configure, build, install, import, then the GPU's work first: pytest -m cuda, the decode
# probe (benchmarks/gpu_decode_probe.py), benchmarks/gpu_suite.py; then ctest and a CPU smoke
# subset. Writes REPORT_DIR/report.json (per-phase seconds and exit codes, versions, nvidia-smi -L,
# pass/fail counts), bench.json and 6 logs beside them (the tool brings back 8 files). A failing phase is recorded and the rest still run where they can.
#
# Build: build-device/ (never ./build), TESSERA_CUDA=ON for arch 90 (H100/H200), OpenCV OFF,
# examples OFF, ninja -j$(nproc); CMake sees only the bundle's libraries (/usr ignored as a
# prefix, pkg-config limited to the bundle's .pc files); run time finds them through
# LD_LIBRARY_PATH=.device/bundle/runtime. If that strict configure fails (say the machine's
# CUDA toolkit lives under /usr), it is retried once without ignoring /usr and the report says so.
# The library is installed into python/tessera as `make build` does, and `import tessera` works
# with PYTHONPATH=python (the in-tree package; nothing goes into the system's python).
# Never touches the GPU's settings: nvidia-smi is only queried (-L, --query-gpu).
#
# On an H200 (2026-12-04): the first lease's four calls built tessera, but `import tessera` crashed
# (static libstdc++, see configure). In the second lease the whole run took 441 s: build 120 s,
# pytest -m cuda 147 s, gpu_suite 82 s, ctest 6 s, smoke 53 s (docs/performance.md, "On a GPU").
# Knobs: PYTHON, JOBS, TESSERA_DEVICE_BUILD, TESSERA_DEVICE_BUDGET_S (570),
# TESSERA_DEVICE_CAP_SCALE (multiplies each phase's time cap), TESSERA_DEVICE_SKIP (phase names
# to skip, e.g. "ctest pytest_cuda" for a second call that only benchmarks), TESSERA_DEVICE_BENCH
# (benchmark names for gpu_suite.py --only), TESSERA_DEVICE_TESTS (pytest's paths and -k for the
# cuda tests; default tests/python).
# A second call on the same (still warm) machine reuses build-device/: configure is skipped when
# its build.ninja exists and the build is incremental.
# The reference fixtures travel in .device/shared (device_bundle.sh copies them from ../shared,
# which does not travel): TESSERA_SHARED_DIR points there, so the parity tests run, not skip.
set -euo pipefail
REPORT=$(realpath -m "${1:?usage: scripts/device_check.sh REPORT_DIR}")
cd "$(dirname "$0")/.."
ROOT=$PWD
mkdir -p "$REPORT"

B=$ROOT/.device/bundle
ARCH=x86_64-linux-gnu
BUILD=${TESSERA_DEVICE_BUILD:-build-device}
PY=$(command -v "${PYTHON:-python3}")
JOBS=${JOBS:-$(nproc)}
START=$(date +%s)
# The device tool stops a command at 600 s; end every phase before that so the report is written.
DEADLINE=$((START + ${TESSERA_DEVICE_BUDGET_S:-570}))
CAP_SCALE=${TESSERA_DEVICE_CAP_SCALE:-1}   # >1 on a slow machine (the 2-core check here: 10)
SITE=$ROOT/$BUILD/pysite   # the wheels the machine lacks, --target'ed here (not the system's python)
PHASES=$ROOT/$BUILD/phases.tsv
mkdir -p "$ROOT/$BUILD"
: > "$PHASES"
rm -f "$ROOT/$BUILD"/pytest-*.xml   # counts only from this run
[ -d "$B/usr" ] || { echo "device_check: $B missing: run scripts/device_bundle.sh first and carry .device" >&2; exit 2; }

export LD_LIBRARY_PATH=$B/runtime${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PKG_CONFIG_LIBDIR=$B/usr/lib/$ARCH/pkgconfig:$B/usr/share/pkgconfig
unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
export PYTHONPATH=$ROOT/python:$SITE${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
[ -d "$ROOT/.device/shared/fixtures" ] && export TESSERA_SHARED_DIR=$ROOT/.device/shared
SKIP=" ${TESSERA_DEVICE_SKIP:-} "
export CMAKE_POLICY_VERSION_MINIMUM=3.5   # a CMake 4 there, older package configs in the bundle

# phase NAME LOG CAP_S CMD...: runs CMD with output appended to REPORT/LOG, capped at CAP_S and at
# the deadline; records name, exit code, seconds. Never fails the script itself.
phase() {
  local name=$1 log=$REPORT/$2 cap=$3; shift 3
  local left=$((DEADLINE - $(date +%s) - 10)) t0 rc=0
  if [[ "$SKIP" == *" $name "* ]]; then
    printf '%s\t%s\t%s\n' "$name" not_asked 0 >> "$PHASES"; echo "== $name: not asked (TESSERA_DEVICE_SKIP)" | tee -a "$log"; return 0
  fi
  cap=$((cap * CAP_SCALE))
  [ "$cap" -lt "$left" ] || cap=$left
  if [ "$cap" -le 0 ]; then
    printf '%s\t%s\t%s\n' "$name" skipped 0 >> "$PHASES"; echo "== $name: skipped (out of time)" | tee -a "$log"; return 0
  fi
  echo "== $name (cap ${cap}s): $*" >> "$log"
  t0=$(date +%s.%N)
  # through bash -c so that CMD may be one of the exported functions below (errexit is not inherited)
  timeout --kill-after=10 "$cap" bash -c 'set -euo pipefail; "$@"' _ "$@" >> "$log" 2>&1 || rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')" >> "$PHASES"
  echo "== $name: rc=$rc" | tee -a "$log"
  return 0
}
ok() { awk -F'\t' -v n="$1" '$1 == n && $2 == "0" {f=1} END {exit !f}' "$PHASES"; }

# ---- env: what the machine is (queries only) ------------------------------------------------
env_info() {
  set +e
  nvidia-smi -L
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], sys.executable); \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); \
print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
  "$PY" -c "import sysconfig, os; h = os.path.join(sysconfig.get_paths()['include'], 'Python.h'); print('Python.h', h, os.path.exists(h))"
  command -v nvcc || ls /usr/local/cuda/bin/nvcc
  (nvcc --version || /usr/local/cuda/bin/nvcc --version) | tail -2
  cmake --version | head -1; ninja --version; c++ --version | head -1; ldd --version | head -1
  grep PRETTY_NAME /etc/os-release; nproc; free -g | head -2
  true
}
export -f env_info
export B ARCH BUILD PY ROOT SITE
phase env env.log 60 env_info

# ---- wheels the machine lacks (installed only where the package is missing) -----------------
install_wheels() {
  local missing=()
  for w in "$ROOT"/.device/wheels/*.whl; do
    local dist; dist=$(basename "$w" | cut -d- -f1)
    "$PY" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$dist" 2> /dev/null || missing+=("$w")
  done
  echo "missing: ${missing[*]:-none}"
  [ ${#missing[@]} -eq 0 ] ||
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "${missing[@]}"
  # CLIP's BPE merges, shipped from open_clip as `make build` does (git-ignored, so not carried).
  local bpe=python/tessera/assets/bpe_simple_vocab_16e6.txt.gz
  [ -f "$bpe" ] || "$PY" scripts/ship_clip_merges.py "$bpe"
}
export -f install_wheels
phase wheels env.log 60 install_wheels

# ---- configure: the bundle's libraries only --------------------------------------------------
configure() {
  local strict=$1 extra=()
  # /usr as a prefix hidden: ZLIB, JPEG, GTest, nlohmann_json can come only from the bundle.
  [ "$strict" = 1 ] && extra+=("-DCMAKE_IGNORE_PREFIX_PATH=/usr;/")
  rm -f "$BUILD/CMakeCache.txt"
  # The H200 image's toolchain linked libstdc++ into libtessera.so statically (why is not
  # established; a plain `c++ -shared` probe there linked it shared), which the build now refuses
  # (cmake/check_shared_libstdcxx.cmake). The process's libstdc++.so.6, named before the objects,
  # supplies every std symbol, so no archive member is pulled in; elsewhere it is the library the
  # compiler links anyway.
  local rt; rt=$({ ldconfig -p || true; } | awk '/libstdc\+\+\.so\.6 .*x86-64/ {print $NF; exit}')
  if [ -n "$rt" ]; then
    local f="-Wl,--push-state,--no-as-needed,$rt,--pop-state"
    extra+=("-DCMAKE_SHARED_LINKER_FLAGS=$f" "-DCMAKE_MODULE_LINKER_FLAGS=$f" "-DCMAKE_EXE_LINKER_FLAGS=$f")
  fi
  # The multiarch include dir holds libjpeg's jconfig.h: a system compiler searches only /usr's.
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DPython3_EXECUTABLE="$PY" \
    -DTESSERA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DTESSERA_WITH_OPENCV=OFF -DTESSERA_BUILD_EXAMPLES=OFF -DTESSERA_BUILD_TESTS=ON \
    -DCMAKE_PREFIX_PATH="$B/usr" -DCMAKE_LIBRARY_ARCHITECTURE=$ARCH "${extra[@]}" \
    -DPKG_CONFIG_EXECUTABLE="$B/usr/bin/pkgconf" \
    -DCMAKE_CXX_STANDARD_INCLUDE_DIRECTORIES="$B/usr/include/$ARCH"
}
export -f configure
STRICT=1
if [ -f "$BUILD/build.ninja" ]; then
  # A second call on a warm machine: the tree is configured, the build below is incremental.
  printf '%s\t%s\t%s\n' configure 0 0 >> "$PHASES"; echo "== configure: reused $BUILD" | tee -a "$REPORT/build.log"
else
  phase configure build.log 180 configure 1
fi
if ! ok configure; then
  STRICT=0
  phase configure_retry build.log 180 configure 0
fi

# ---- build, install into python/tessera (as `make build`), import ---------------------------
if ok configure || ok configure_retry; then
  phase build build.log 420 cmake --build "$BUILD" --parallel "$JOBS"
fi
if ok build; then
  phase install build.log 60 cmake --install "$BUILD" --prefix python/tessera
  phase import env.log 60 "$PY" -c "
import torch, tessera, tessera.ops, tessera.data
print('tessera', tessera.__file__, tessera._C.__file__)
print('image decode (PNG needs OpenCV)', tessera.data.image_decode_available())
if torch.cuda.is_available():
    c = torch.rand(2, 8, 8, device='cuda')
    print('soft_dtw on cuda', tessera.ops.soft_dtw(c, 0.1).tolist())
else:
    print('no CUDA device: the CUDA kernels are built but not run')"
fi

# ---- when the build or the import failed: what the toolchain did with libstdc++ ------------
link_diagnosis() {
  set +e
  c++ -v 2>&1 | tail -3
  for f in libstdc++.so libstdc++.a; do echo "c++ -print-file-name=$f: $(c++ -print-file-name=$f)"; done
  ldconfig -p | grep -E 'libstdc\+\+|libgomp'
  local lib=$BUILD/libtessera.so; [ -f "$lib" ] || lib=python/tessera/lib/libtessera.so
  [ -f "$lib" ] && { readelf -d "$lib" | grep NEEDED; nm -D --defined-only "$lib" | grep -c ' _ZNS' ; }
  # the link line ninja ran for the library (implicit libraries CMake added are on it)
  ninja -C "$BUILD" -t commands 2>/dev/null | grep -E -- '-o [^ ]*libtessera\.so' | tail -1 | tr ' ' '\n' | grep -E -- 'stdc|^-l|static|nostd|\.a$|^/.*\.so' | sort -u
  "$PY" -X faulthandler -c "import tessera" 2>&1 | tail -25
  true
}
export -f link_diagnosis
if ! ok build || ! ok import; then
  phase diagnose build.log 60 link_diagnosis
fi

# ---- tests and benchmarks: the GPU's work first, then ctest and the CPU smoke subset -----------
if ok install && ok import; then
  phase pytest_cuda pytest-cuda.log ${TESSERA_DEVICE_TEST_CAP:-180} "$PY" -m pytest -m cuda ${TESSERA_DEVICE_TESTS:-tests/python} \
    -q -rfEs -p no:cacheprovider --junitxml="$ROOT/$BUILD/pytest-cuda.xml"
  # where a decoding step's time goes (host launches or the device): kernels per token, busy time.
  # Into bench.log: the device tool brings back at most 8 files (6 logs, bench.json, report.json).
  phase probe bench.log 90 "$PY" benchmarks/gpu_decode_probe.py
  # gpu_suite.py writes bench.json after each benchmark: a phase stopped at its cap keeps its figures.
  phase bench bench.log 240 "$PY" benchmarks/gpu_suite.py --json "$REPORT/bench.json" \
    ${TESSERA_DEVICE_BENCH:+--only $TESSERA_DEVICE_BENCH}
  # Few at once: every test runs torch's intra-op threads on all cores.
  phase ctest ctest.log 150 bash -c "cd '$BUILD' && ctest --output-on-failure --timeout 120 -j 4"
  # CPU smoke: the ops, tokenizers, checkpoints and one model family through the in-tree package.
  phase pytest_smoke pytest-smoke.log 120 "$PY" -m pytest -m "not slow and not cuda" -q -rfE -p no:cacheprovider \
    --junitxml="$ROOT/$BUILD/pytest-smoke.xml" tests/python/test_soft_dtw.py tests/python/test_tokenizer.py \
    tests/python/test_safetensors_io.py tests/python/test_losses.py tests/python/test_llama.py
else
  printf '%s\t%s\t%s\n' bench skipped 0 >> "$PHASES"
fi

# ---- report.json -----------------------------------------------------------------------------
"$PY" - "$REPORT" "$ROOT/$BUILD" "$STRICT" "$START" "$JOBS" << 'EOF'
import json, os, re, subprocess, sys, time, xml.etree.ElementTree as ET
report, build, strict, start, jobs = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]), int(sys.argv[5])

def run(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e:  # noqa: BLE001 - the report must be written whatever failed
        return f"error: {e}"

phases = []
for line in open(os.path.join(build, "phases.tsv")):
    name, rc, secs = line.rstrip("\n").split("\t")
    phases.append({"name": name, "rc": int(rc) if rc.lstrip("-").isdigit() else rc, "seconds": round(float(secs or 0), 1)})

def junit(path):
    if not os.path.exists(path):
        return None
    root = ET.parse(path).getroot()
    s = root if root.tag == "testsuite" else root.find("testsuite")
    n = {k: int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    n["passed"] = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    return n

def ctest(path):
    if not os.path.exists(path):
        return None
    text = open(path, errors="replace").read()
    m = re.search(r"tests passed(?:, (\d+) tests failed)? out of (\d+)", text)
    if not m:
        return {"parsed": False}
    failed, total = int(m.group(1) or 0), int(m.group(2))
    return {"total": total, "failed": failed, "passed": total - failed,
            "failed_names": re.findall(r"^\s*\d+ - (\S+) \(", text.split("The following tests FAILED:")[-1], re.M) if failed else []}

torch_info = run(f"{sys.executable} -c \"import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())\"")
out = {
    "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
    "total_seconds": round(time.time() - start, 1),
    "phases": phases,
    "all_ok": all(p["rc"] in (0, "absent", "not_asked") for p in phases),
    "configure_strict_bundle_only": strict,
    "jobs": jobs,
    "nvidia_smi_L": run("nvidia-smi -L"),
    "versions": {
        "python": sys.version.split()[0], "torch_cuda_available": torch_info,
        "nvcc": run("(nvcc --version || /usr/local/cuda/bin/nvcc --version) | tail -1"),
        "cmake": run("cmake --version | head -1"), "cxx": run("c++ --version | head -1"),
        "glibc": run("ldd --version | head -1"), "os": run("grep PRETTY_NAME /etc/os-release"),
    },
    "ctest": ctest(os.path.join(report, "ctest.log")),
    "pytest_cuda": junit(os.path.join(build, "pytest-cuda.xml")),
    "pytest_smoke": junit(os.path.join(build, "pytest-smoke.xml")),
    "bench_json": os.path.exists(os.path.join(report, "bench.json")),
    # Which copies of the linked libraries the loader picks (the bundle's, not the system's).
    "ldd_libtessera": run("ldd python/tessera/lib/libtessera.so python/tessera/lib/libtessera_sentencepiece.so | grep -E 'icu|pcre2|sentencepiece|jpeg|libz|stdc|gomp|not found'"),
}
json.dump(out, open(os.path.join(report, "report.json"), "w"), indent=1)
print(json.dumps({k: out[k] for k in ("total_seconds", "all_ok", "phases", "ctest", "pytest_cuda", "pytest_smoke")}, indent=1))
EOF
