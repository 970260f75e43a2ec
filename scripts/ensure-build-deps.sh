#!/usr/bin/env bash
# Installs what switchyard's build and tests need beyond Rust: cmake
# (pingora's build runs it), and jq and curl (the deploy kit of
# examples/compose, which the tests run). Does nothing when they are there.
set -euo pipefail

missing=()
for tool in cmake jq curl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "switchyard: installing ${missing[*]} with apt-get (cmake: pingora's build; jq, curl: the deploy kit and its tests)" >&2
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

still=()
for tool in "${missing[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || still+=("$tool")
done
if [ ${#still[@]} -ne 0 ]; then
  cat >&2 <<MSG
switchyard: could not install ${still[*]} by itself. Install it, then run the command again:
  Debian/Ubuntu:  sudo apt-get install ${still[*]}
  Fedora:         sudo dnf install ${still[*]}
  macOS:          brew install ${still[*]}
MSG
  exit 1
fi
