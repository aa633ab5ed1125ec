#!/usr/bin/env bash
# static-bins.sh BIN... — builds the workspace binaries BIN... as the images ship them: static
# release executables for x86_64-unknown-linux-musl, or x86_64-unknown-linux-gnu with +crt-static
# when the musl target or musl-gcc cannot be installed. Prints the directory that holds them
# (target/<triple>/release) on stdout; everything else goes to stderr.
#
# Used by scripts/images.sh (the binaries in the images) and scripts/bench.sh (the bench measures
# the operator binary users run). Env: PHOENIX_IMAGE_TARGET forces a Rust target triple.
set -euo pipefail
cd "$(dirname "$0")/.."
(($# > 0)) || { echo "usage: $0 BIN..." >&2; exit 2; }

log() { printf 'static-bins: %s\n' "$*" >&2; }
# shellcheck source=scripts/need.sh
source scripts/need.sh

# The Rust target for static binaries: musl when its std and a musl C compiler (aws-lc-sys and ring
# compile C) are available or installable, else glibc with +crt-static.
rust_target() {
  if [[ -n ${PHOENIX_IMAGE_TARGET:-} ]]; then echo "$PHOENIX_IMAGE_TARGET"; return; fi
  local musl=x86_64-unknown-linux-musl
  if ! rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
    timeout 300 rustup target add "$musl" >&2 || true
  fi
  if rustup target list --installed 2>/dev/null | grep -qx "$musl" \
    && { command -v musl-gcc >/dev/null 2>&1 || (need musl-gcc musl-tools) >&2; }; then
    echo "$musl"
  else
    log "musl target or musl-gcc unavailable: building x86_64-unknown-linux-gnu with +crt-static"
    echo x86_64-unknown-linux-gnu
  fi
}

# Fails unless the ELF file has no program interpreter (statically linked, static-pie included).
check_static() {
  local desc
  desc=$(file -L "$1")
  [[ $desc == *"statically linked"* || $desc == *"static-pie linked"* ]] \
    || die "$1 is not a static executable: $desc"
}

need file file
TARGET=$(rust_target)
log "building $* for $TARGET (release)"
if [[ $TARGET == *-linux-musl ]]; then
  export CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-musl-gcc}
else
  # Only the target's artifacts get crt-static (an explicit --target keeps build scripts and proc
  # macros dynamic, as they must be).
  export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
fi
bins=()
for name in "$@"; do bins+=(--bin "$name"); done
cargo build --release --locked --target "$TARGET" --workspace "${bins[@]}" >&2
dir=$PWD/target/$TARGET/release
for name in "$@"; do check_static "$dir/$name"; done
echo "$dir"
