#!/usr/bin/env bash
# Installs what switchyard's build and tests need beyond Rust: cmake
# (pingora's build runs it), jq and curl (the deploy kit of
# examples/compose, which the tests run), PyYAML (the test that reads the
# kit's docker-compose.yml), pebble (the ACME test CA the [tls.acme]
# tests order from), chromium (the browser the dashboard's test drives),
# protoc (etcd-client compiles etcd's protocol at build time) and etcd (the
# [cluster] tests run a real 3-member etcd).
# With --build, only what the build needs (cmake, protoc): `make demo`
# runs that.
# Does nothing when they are there.
set -euo pipefail

# Whether the Debian package $1 is needed: its command, or its module, is
# missing.
needed() {
  case "$1" in
    python3-yaml) ! python3 -c 'import yaml' >/dev/null 2>&1 ;;
    protobuf-compiler) ! command -v protoc >/dev/null 2>&1 ;;
    etcd-server) ! command -v etcd >/dev/null 2>&1 ;;
    *) ! command -v "$1" >/dev/null 2>&1 ;;
  esac
}

packages=(cmake jq curl python3-yaml pebble chromium protobuf-compiler etcd-server)
why="cmake: pingora's build; jq, curl: the deploy kit and its tests; python3-yaml: the kit's compose file test; pebble: the ACME tests; chromium: the dashboard's browser test; protobuf-compiler: etcd-client's build; etcd-server: the cluster tests"
if [ "${1:-}" = "--build" ]; then
  packages=(cmake protobuf-compiler)
  why="cmake: pingora's build; protobuf-compiler: etcd-client's build"
fi

missing=()
for package in "${packages[@]}"; do
  if needed "$package"; then missing+=("$package"); fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "switchyard: installing ${missing[*]} with apt-get ($why)" >&2
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

still=()
for package in "${missing[@]}"; do
  if needed "$package"; then still+=("$package"); fi
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
