#!/usr/bin/env bash
# Idempotent machine + venv setup for a fresh Debian 12: apt packages (sudo when not root),
# .venv with the pinned torch and the test/benchmark packages. Re-running does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(build-essential cmake ninja-build ccache git pkg-config python3-venv python3-dev
  libopencv-dev libjpeg-dev libsentencepiece-dev libfmt-dev nlohmann-json3-dev libpcre2-dev libicu-dev zlib1g-dev
  libgtest-dev libbenchmark-dev dataset-fashion-mnist wamerican fortunes)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.stamp
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  touch "$stamp"
fi
