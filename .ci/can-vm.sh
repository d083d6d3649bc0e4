#!/usr/bin/env bash
# Runs the CAN tests on real kernel SocketCAN.
#
# This machine's kernel has no SocketCAN, so the tests run inside a VM:
# Debian's stock linux-image-*-amd64 kernel (the cloud flavour has no CAN)
# under qemu-system-x86_64 in software emulation (this host's /dev/kvm is a
# paravirtual KVM that cannot boot a stock kernel), with a busybox initramfs
# that loads can, can-raw, can-isotp, can-dev and vcan, creates vcan0..vcan11
# and runs one statically linked test binary. The kernel and busybox are
# extracted (never installed) into target/can-vm and reused on later runs.
#
# Installs what it needs with apt (runs as root, needs no stdin).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage:
  .ci/can-vm.sh [TEST ARGS...]        build tests/can.rs statically and run it in the VM
                                      (TEST ARGS go to the test binary, e.g. a name filter
                                      or --nocapture)
  .ci/can-vm.sh --bin BINARY [ARGS...] run an already built static test binary in the VM
  .ci/can-vm.sh --help

Inside the VM the binary sees CAN_TEST_IFACE=vcan0 and CAN_TEST_IFACES="vcan0 ... vcan11"
(one interface per test that needs its own, so tests can run in parallel and one may take
its interface down and up with busybox `ip`).
Exits 0 only if the binary exited 0 (VMTEST_RC=0) and at least one test passed.

Environment: KVER (kernel version, e.g. 6.1.0-44-amd64; default: cached, else Debian's
current linux-image-amd64), VM_WORK (default target/can-vm), VM_TIMEOUT (seconds, default
300), ACCEL (qemu accelerator options, default TCG).
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Installs Debian packages, refreshing the package lists once if needed.
APT_UPDATED=0
apt_refresh() {
  if [ "$APT_UPDATED" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
    APT_UPDATED=1
  fi
}
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" </dev/null \
    || { apt_refresh; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" </dev/null; }
}
apt_download() {
  apt-get download -qq "$@" </dev/null 2>/dev/null || { apt_refresh; apt-get download -qq "$@" </dev/null; }
}

# Resolves the kernel version: KVER, else the cached one, else Debian's current.
kernel_version() {
  if [ -n "${KVER:-}" ]; then echo "$KVER"; return; fi
  if [ -s "$W/kver" ] && [ -d "$W/kernel-$(cat "$W/kver")" ]; then cat "$W/kver"; return; fi
  local v
  v=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{sub("linux-image-","",$2); print $2; exit}')
  if [ -z "$v" ]; then
    apt_refresh
    v=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{sub("linux-image-","",$2); print $2; exit}')
  fi
  [ -n "$v" ] || { echo "can-vm: cannot resolve Debian's linux-image-amd64 version" >&2; exit 1; }
  echo "$v"
}

prepare_vm_parts() {
  command -v qemu-system-x86_64 >/dev/null || apt_install qemu-system-x86
  mkdir -p "$W"
  KV=$(kernel_version)
  if [ ! -d "$W/kernel-$KV" ]; then
    echo "can-vm: fetching linux-image-$KV (extracted, not installed)"
    rm -rf "$W/dl" && mkdir -p "$W/dl"
    (cd "$W/dl" && apt_download "linux-image-$KV")
    dpkg-deb -x "$W"/dl/linux-image-"$KV"_*.deb "$W/kernel-$KV.tmp"
    mv "$W/kernel-$KV.tmp" "$W/kernel-$KV"
    rm -rf "$W/dl"
  fi
  echo "$KV" > "$W/kver"
  if [ ! -x "$W/busybox/bin/busybox" ]; then
    echo "can-vm: fetching busybox-static"
    rm -rf "$W/dl" && mkdir -p "$W/dl"
    (cd "$W/dl" && apt_download busybox-static)
    rm -rf "$W/busybox" && dpkg-deb -x "$W"/dl/busybox-static_*.deb "$W/busybox"
    rm -rf "$W/dl"
  fi
}

# Copies one kernel module into the initramfs, uncompressed (busybox insmod
# reads plain .ko only).
add_module() {
  local name=$1 src
  src=$(find "$W/kernel-$KV/lib/modules/$KV/kernel" -name "$name.ko" -o -name "$name.ko.xz" -o -name "$name.ko.zst" | head -n 1)
  [ -n "$src" ] || { echo "can-vm: module $name not in linux-image-$KV" >&2; exit 1; }
  case "$src" in
    *.xz) xz -dc "$src" > "$R/mods/$name.ko" ;;
    *.zst) zstd -qdc "$src" > "$R/mods/$name.ko" ;;
    *) cp "$src" "$R/mods/$name.ko" ;;
  esac
}

run_in_vm() {
  local bin
  bin=$(readlink -f "$1"); shift
  [ -x "$bin" ] || { echo "can-vm: $bin is not an executable" >&2; exit 1; }
  if ! file_is_static "$bin"; then
    echo "can-vm: $bin is dynamically linked; build it with -C target-feature=+crt-static" >&2
    exit 1
  fi
  prepare_vm_parts
  R=$W/root
  rm -rf "$R" && mkdir -p "$R"/{bin,dev,proc,sys,tmp,mods}
  cp "$W/busybox/bin/busybox" "$R/bin/"
  for m in can can-raw can-isotp can-dev vcan; do add_module "$m"; done
  cp "$bin" "$R/bin/testbin"
  # Shell-quoted so that arguments survive the trip into the VM intact.
  if [ $# -gt 0 ]; then printf '%q ' "$@" > "$R/testargs"; else : > "$R/testargs"; fi
  cat > "$R/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in can can-raw can-isotp can-dev vcan; do insmod /mods/$m.ko || echo "VM: insmod $m failed"; done
# Loopback, for the whole-appliance test (it serves HTTP on 127.0.0.1).
ip link set lo up
IFACES=""
for i in 0 1 2 3 4 5 6 7 8 9 10 11; do
  ip link add vcan$i type vcan && ip link set up vcan$i && IFACES="$IFACES vcan$i"
done
echo "VM: uptime $(cut -d' ' -f1 /proc/uptime)s, interfaces:$IFACES, starting tests"
export CAN_TEST_IFACE=vcan0 CAN_TEST_IFACES="${IFACES# }" RUST_BACKTRACE=1
eval "set -- $(cat /testargs)"
/bin/testbin "$@"; echo "VMTEST_RC=$?"
poweroff -f
INIT
  chmod +x "$R/init"
  (cd "$R" && find . | ./bin/busybox cpio -o -H newc 2>/dev/null) | gzip -1 > "$W/initrd.gz"
  # TCG: a stock kernel hangs under this host's paravirtual KVM.
  local accel=${ACCEL:-"-accel tcg,thread=multi -cpu max"}
  local log=$W/vm.log
  # shellcheck disable=SC2086
  timeout "${VM_TIMEOUT:-300}" qemu-system-x86_64 $accel -m 768 -smp 2 -nodefaults -no-reboot \
    -display none -serial stdio -kernel "$W/kernel-$KV/boot/vmlinuz-$KV" -initrd "$W/initrd.gz" \
    -append "console=ttyS0 quiet panic=-1 rdinit=/init" </dev/null | tee "$log" || true
  if ! grep -q '^VMTEST_RC=0' "$log"; then
    echo "can-vm: FAILED (test binary did not exit 0; see $log)" >&2
    exit 1
  fi
  local passed
  passed=$(sed -n 's/^test result: [a-zA-Z]*\. \([0-9][0-9]*\) passed.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
  if [ "$passed" -eq 0 ]; then
    echo "can-vm: FAILED (zero tests ran; see $log)" >&2
    exit 1
  fi
  echo "can-vm: OK, $passed tests passed in the VM (kernel $KV)"
}

file_is_static() {
  command -v readelf >/dev/null || apt_install binutils
  # A static-pie or static executable has no program interpreter.
  ! LC_ALL=C readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter'
}

build_static_tests() {
  local json exe
  json=$(RUSTFLAGS='-C target-feature=+crt-static' cargo test --release --no-run \
    --target x86_64-unknown-linux-gnu --test can --message-format=json)
  # The test target's artifact, not the binaries built alongside it.
  exe=$(printf '%s\n' "$json" | grep '"kind":\["test"\]' | grep '"name":"can"' \
    | grep -o '"executable":"[^"]*"' | tail -n 1 | sed 's/^"executable":"//; s/"$//')
  [ -n "$exe" ] || { echo "can-vm: cargo produced no test executable" >&2; exit 1; }
  echo "$exe"
}

W=${VM_WORK:-$ROOT/target/can-vm}
mkdir -p "$W"; W=$(readlink -f "$W")

case "${1:-}" in
  -h|--help) usage ;;
  --bin)
    shift
    [ $# -ge 1 ] || { usage >&2; exit 2; }
    run_in_vm "$@"
    ;;
  *)
    echo "can-vm: building tests/can.rs statically"
    EXE=$(build_static_tests)
    run_in_vm "$EXE" "$@"
    ;;
esac
