#!/usr/bin/env bash
# Prepares .device/ (git-ignored) for scripts/device_check.sh on the GPU machine: that machine has
# python3 with torch 2.11 (cu130), CMake, ninja, nvcc and most test packages, but none of the
# Debian libraries tessera links and no package registry. Runs here (Debian 12), idempotent:
# re-running downloads only what is missing and re-unpacks only changed packages.
#
# .device/bundle  Debian 12 packages unpacked with dpkg-deb -x (no install, nothing as root), 44 MiB
#   in all (unpacked sizes after trimming):
#   libicu-dev libicu72                   Unicode normalisation (text/): icudata 30 MiB  36 MiB
#   libsentencepiece-dev libsentencepiece0  sentencepiece tokenizer                     2.7 MiB
#   libgtest-dev                          GoogleTest (static) for ctest                 1.4 MiB
#   nlohmann-json3-dev                    headers + CMake config                        0.9 MiB
#   libpcre2-dev libpcre2-8-0             regex (text/)                                 0.7 MiB
#   libjpeg62-turbo-dev libjpeg62-turbo   JPEG decoded as PIL does                      0.7 MiB
#   zlib1g-dev zlib1g                     link time only (the machine's libz.so.1 runs) 0.2 MiB
#   pkgconf pkgconf-bin libpkgconf3       pkg-config, which the machine may lack        0.1 MiB
#   They need glibc >= 2.34 and libstdc++ GLIBCXX_3.4.30 (Ubuntu 22.04 or newer).
#   No OpenCV: libopencv-dev's tree is hundreds of MiB. device_check.sh builds with
#   TESSERA_WITH_OPENCV=OFF: JPEG still decodes through libjpeg; PNG decoding and drawing raise
#   "built without OpenCV", and the tests that need them skip.
#   Docs, man pages, static archives we do not link, ICU's tools are dropped; .pc files get
#   prefix=${pcfiledir}/../../.. so the bundle works wherever the repo lands.
#   bundle/runtime: links to the shared libraries needed at run time (not libz, whose system
#   copy must win), for LD_LIBRARY_PATH.
# .device/wheels  test-only wheels the machine's image lacks (its package list is in the device
#   tool's KINDS.md: transformers 5.17.0, timm, pytest, safetensors, tokenizers, peft, pyyaml,
#   tqdm ... are there already), the venv's versions (pure Python; wcwidth is abi3):
#   open_clip_torch (side-by-side CLIP tests, CLIP's BPE merges), ftfy + wcwidth (open_clip),
#   pysdtw + tslearn (soft-DTW references), webdataset + braceexpand (webdataset tests): 2.8 MiB.
#   device_check.sh installs only those the machine lacks.
# .device/shared  a copy of ../shared's fixtures/hf and assets (~10 MiB), which the tests read
#   through TESSERA_SHARED_DIR: ../shared itself does not travel with the working tree.
# Sizes are printed at the end; everything that travels (tracked tree + .device) must stay under
# the device tool's 64 MiB (budget 60 MiB): 49 MiB when written (tree 3 + bundle 44 + wheels 2.8).
#
# On an H200 (2026-12-04) the bundle built tessera, and the tests and benchmarks ran (see
# scripts/device_check.sh's header, docs/performance.md "On a GPU"). 59 MiB travel with the fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=.device
B=$DEV/bundle
# The .deb files stay outside the tree: everything under .device travels.
DEBS=${TESSERA_DEB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera/debs}
WHEELS=$DEV/wheels
ARCH=x86_64-linux-gnu
PACKAGES=(nlohmann-json3-dev zlib1g-dev zlib1g libpcre2-dev libpcre2-8-0 libicu-dev libicu72
  libsentencepiece-dev libsentencepiece0 libjpeg62-turbo-dev libjpeg62-turbo libgtest-dev
  pkgconf pkgconf-bin libpkgconf3)
WHEEL_PACKAGES=(open_clip_torch ftfy wcwidth pysdtw tslearn webdataset braceexpand)
mkdir -p "$DEBS" "$WHEELS"

# ---- Debian packages: apt-get download (no root needed), the system's package lists -------
# Without lists (a bare container) fetch them into a private state dir instead of /var/lib/apt.
APT=(apt-get -q)
# As root, apt's _apt sandbox user cannot write into a cache under $HOME.
[ "$(id -u)" -ne 0 ] || APT+=(-o APT::Sandbox::User=root)
if ! apt-cache show "${PACKAGES[0]}" > /dev/null 2>&1; then
  mkdir -p "$DEBS/lists/partial"
  APT+=(-o Dir::State::Lists="$DEBS/lists")
  "${APT[@]}" update
fi
for p in "${PACKAGES[@]}"; do
  v=$(apt-cache policy "$p" | awk '/Candidate:/{print $2}')
  # apt names files <pkg>_<version with ':' as %3a>_<arch>.deb
  ls "$DEBS/${p}_${v//:/%3a}_"*.deb > /dev/null 2>&1 || (cd "$DEBS" && "${APT[@]}" download "$p")
done

# ---- unpack into the bundle (fresh each time a .deb is newer than the stamp) -----------------
stamp=$B/.stamp
if [ ! -f "$stamp" ] || [ -n "$(find "$DEBS" -name '*.deb' -newer "$stamp")" ]; then
  rm -rf "$B"; mkdir -p "$B"
  for d in "$DEBS"/*.deb; do dpkg-deb -x "$d" "$B"; done
  # What neither the build nor the run needs.
  rm -rf "$B/usr/share/doc" "$B/usr/share/man" "$B/usr/share/lintian" "$B/usr/share/aclocal" \
    "$B/usr/bin/icuinfo" "$B/usr/lib/$ARCH/icu" "$B/usr/share/icu"
  rm -f "$B/usr/lib/$ARCH/"lib{icui18n,icuio,icutu,icutest}.so* "$B/usr/lib/$ARCH/"{libicu*.a,libpcre2-*.a,libsentencepiece*.a,libjpeg.a,libz.a,libpkgconf.a}
  # Absolute symlinks (zlib1g-dev's libz.so -> /lib/...) would point out of the bundle: relative.
  find "$B" -type l -lname '/*' -print0 | while IFS= read -r -d '' l; do
    ln -sfn "$(realpath -m --relative-to="$(dirname "$l")" "$B$(readlink "$l")")" "$l"
  done
  # Relocatable .pc files: prefix relative to the file (pkgconf and pkg-config both know pcfiledir).
  find "$B" -name '*.pc' -print0 | while IFS= read -r -d '' pc; do
    rel=$(realpath --relative-to="$(dirname "$pc")" "$B/usr")
    # libjpeg.pc spells /usr in every variable; nlohmann_json.pc has only -I/usr/include.
    sed -E -i -e "s#^([A-Za-z_]+) *= */usr(/[^ ]*)? *\$#\1=\${pcfiledir}/$rel\2#" \
      -e "s#-([IL])/usr/#-\1\${pcfiledir}/$rel/#g" "$pc"
    if grep -v '^#' "$pc" | grep -q '/usr'; then echo "device_bundle: /usr left in $pc" >&2; exit 1; fi
  done
  # Run-time libraries (symlinks, relative) for LD_LIBRARY_PATH; libz stays the system's.
  mkdir -p "$B/runtime"
  for so in "$B/usr/lib/$ARCH/"lib{icuuc,icudata,pcre2-8,sentencepiece,sentencepiece_train,jpeg,pkgconf}.so.*; do
    [[ "$so" =~ \.so\.[0-9]+$ ]] && ln -sfn "../usr/lib/$ARCH/$(basename "$so")" "$B/runtime/"
  done
  touch "$stamp"
fi

# ---- wheels: the venv's versions, pure Python, no dependencies resolved ---------------------
for w in "${WHEEL_PACKAGES[@]}"; do
  v=$(.venv/bin/python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$w")
  norm=$(echo "$w" | tr '-' '_')
  ls "$WHEELS/${norm}-${v}-"*.whl > /dev/null 2>&1 ||
    .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$WHEELS" "$w==$v"
done

# ---- reference data: ../shared does not travel, the tests' fixtures do (TESSERA_SHARED_DIR there)
SHARED=${TESSERA_SHARED_DIR:-../shared}
if [ -d "$SHARED/fixtures/hf" ]; then
  rm -rf "$DEV/shared"; mkdir -p "$DEV/shared/fixtures"
  cp -r "$SHARED/fixtures/hf" "$DEV/shared/fixtures/hf"
  [ ! -d "$SHARED/assets" ] || cp -r "$SHARED/assets" "$DEV/shared/assets"
else
  echo "device_bundle: $SHARED/fixtures/hf not found: the device's parity tests will skip" >&2
fi

# ---- sizes against the budget ---------------------------------------------------------------
# Bytes the files hold (--apparent-size), as the carry limit counts them, not the disk blocks they
# take (2 MiB more here: a fitting bundle was refused).
tree_kib=$(git ls-files -co --exclude-standard -z | du -ck --apparent-size --files0-from=- 2>/dev/null | tail -1 | cut -f1)
dev_kib=$(du -sk --apparent-size "$DEV" | cut -f1)
du -sh "$B" "$WHEELS" "$DEBS"
echo "device_bundle: working tree $((tree_kib / 1024)) MiB + .device $((dev_kib / 1024)) MiB" \
  "= $(((tree_kib + dev_kib) / 1024)) MiB travel (budget 60, limit 64)"
if [ $((tree_kib + dev_kib)) -gt $((60 * 1024)) ]; then
  echo "device_bundle: over the 60 MiB budget" >&2; exit 1
fi
