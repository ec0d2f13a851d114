#!/usr/bin/env bash
# System libraries napari's Qt canvas needs on a bare Debian/Ubuntu machine, plus Xvfb for headless tests.
set -euo pipefail
PKGS="xvfb xauth libgl1 libegl1 libgl1-mesa-dri libglib2.0-0 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0
libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0
libxcb-xfixes0 libxcb-cursor0"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-get not found: install Xvfb and Mesa (OpenGL) with your system's package manager" >&2
  exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
