#!/usr/bin/env bash
# Installs what switchyard's build needs beyond Rust: cmake (pingora's
# build runs it). Does nothing when it is already there.
set -euo pipefail

if command -v cmake >/dev/null 2>&1; then
  exit 0
fi

echo "switchyard: cmake is missing (pingora's build needs it); installing it with apt-get" >&2
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake >/dev/null
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake >/dev/null
  fi
fi

if ! command -v cmake >/dev/null 2>&1; then
  cat >&2 <<'MSG'
switchyard: could not install cmake by itself. Install it, then run the command again:
  Debian/Ubuntu:  sudo apt-get install cmake
  Fedora:         sudo dnf install cmake
  macOS:          brew install cmake
MSG
  exit 1
fi
