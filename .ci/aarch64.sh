#!/usr/bin/env bash
# Cross-builds forecourt for the Raspberry Pi (Raspberry Pi OS 64-bit:
# aarch64-unknown-linux-gnu) and runs its tests under qemu-user.
#
# rustup cannot fetch the aarch64 std here, so this uses Debian's rustc-web
# with its arm64 std (libstd-rust-web-dev:arm64), gcc-aarch64-linux-gnu as
# the linker and qemu-aarch64-static as the test runner.
#
# Under qemu-user (Debian 12's qemu 7.2) the termios2 ioctls fail with
# ENOSYS: opening a serial port by path or setting its line settings fails,
# though it works natively and on a Pi. The tests see FORECOURT_QEMU_USER=1
# and skip exactly those cases; pty I/O through SerialStream::pair() works.
# Nor can a test start another aarch64 program here (no binfmt_misc), so
# tests that spawn the forecourt binary skip on the same variable.
#
# Usage: .ci/aarch64.sh [CARGO TEST ARGS...]
#   default: --no-fail-fast --tests (the library's unit tests and every
#   integration test, the pty tests among them; no doctests, no benches).
#   Runs as root (it installs Debian packages when they are missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

TARGET=aarch64-unknown-linux-gnu
# Installed in one transaction: rustc-web and its arm64 std must be the same version.
PACKAGES=(rustc-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "aarch64: installing ${missing[*]}"
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  apt-get update -qq </dev/null
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" </dev/null >/dev/null
fi

export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# Never add `-L /usr/aarch64-linux-gnu`: with the cross glibc, threads spin forever.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static
export FORECOURT_QEMU_USER=1

echo "aarch64: $("$RUSTC" --version), $(qemu-aarch64-static --version | head -n 1)"
[ $# -gt 0 ] || set -- --no-fail-fast --tests
# Its own target dir: a different rustc would otherwise rebuild the native one.
exec cargo test --target "$TARGET" --target-dir target/aarch64-cross "$@"
