#!/usr/bin/env bash
# Fuzzes the wire codec (fuzz/: targets `deframer` and `decode`) for a
# bounded time each, and fails on any crash, panic or timeout.
#
# cargo-fuzz needs a nightly toolchain (libFuzzer's coverage
# instrumentation). With none installed this says so, type-checks the fuzz
# targets on stable so they cannot rot unnoticed, and exits 0.
#
# Usage: .ci/fuzz.sh [TARGET...]        (default: every target)
# Environment: FUZZ_SECONDS per target (default 60),
#              FUZZ_SANITIZER (default none, see below).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
# The crate forbids unsafe code and the targets reach only safe Rust, so
# AddressSanitizer would find nothing a panic does not, while its
# instrumentation slows every input down.
SANITIZER=${FUZZ_SANITIZER:-none}
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=(deframer decode); fi

# Fuzz the code as it ships: start from the product's own lock file, so the
# fuzz build uses the same dependency versions (cargo adds libfuzzer-sys).
# fuzz/Cargo.lock is therefore generated, never edited by hand.
cp Cargo.lock fuzz/Cargo.lock

if ! command -v rustup >/dev/null || ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: SKIPPED: no nightly Rust toolchain here (cargo-fuzz needs nightly for"
  echo "fuzz: libFuzzer's instrumentation). Install one with 'rustup toolchain install nightly'."
  echo "fuzz: checking instead that the fuzz targets still compile on stable"
  cargo check --manifest-path fuzz/Cargo.toml --bins
  exit 0
fi

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz from crates.io"
  cargo install cargo-fuzz --locked
fi
echo "fuzz: $(cargo +nightly fuzz --version), $(rustc +nightly --version)"

# Seeds: PROTOCOL.md 5's test vectors, so the fuzzer starts from real
# frames rather than having to discover COBS and CRC-32C on its own.
# (The corpus directories are git-ignored; libFuzzer grows them.)
PAYLOADS=(
  01010100080706050403020100a8da769b010000574630585858474344583132333435363701040200
  0104020008070605040302016092db769b010000018403000040e20100143701000000
  010603000807060504030201c07cdc769b010000e0070203010009c1231c04
  018007000807060504030201f4a9da769b0100000100
)
WIRES=(
  0401010109080706050403020106a8da769b0101155746305858584743445831323334353637010402058b1e35f800
  040104020f08070605040302016092db769b010104018403010440e201041437010101053cabca9300
  040106030f0807060504030201c07cdc769b010106e0070203010a09c1231c043a0a50c100
  040180070f0807060504030201f4a9da769b01010201050b2c4a3800
)
write_hex() { # FILE HEX: writes the bytes HEX spells
  printf '%b' "$(printf '%s' "$2" | sed 's/../\\x&/g')" > "$1"
}
mkdir -p fuzz/corpus/deframer fuzz/corpus/decode
for i in "${!PAYLOADS[@]}"; do
  write_hex "fuzz/corpus/decode/vector-$i" "${PAYLOADS[$i]}"
  # The deframer's first input byte chooses how reads split the stream.
  write_hex "fuzz/corpus/deframer/vector-$i" "0$((i + 1))${WIRES[$i]}"
done
write_hex fuzz/corpus/deframer/all-vectors "2c$(printf '%s' "${WIRES[@]}")"

for t in "${TARGETS[@]}"; do
  case $t in
    # Long enough for several frames plus a run past the 1,033-byte limit.
    deframer) max_len=8192 ;;
    # A little over the largest payload (1,024 bytes).
    *) max_len=1100 ;;
  esac
  echo "fuzz: $t for ${SECONDS_PER_TARGET}s (sanitizer: $SANITIZER)"
  cargo +nightly fuzz run --sanitizer "$SANITIZER" "$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -max_len="$max_len" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1
done
echo "fuzz: no crash in ${TARGETS[*]}"
