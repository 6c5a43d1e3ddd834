#!/usr/bin/env bash
# The demo, from a fresh Debian 12 machine: installs what it needs, builds
# ucrfs, makes a small image from busybox-static, serves it from a local
# docker-registry on 127.0.0.1, and shows ucrfs pulling, inspecting and
# mounting it, running a command in the mounted root filesystem, and running
# the image as a container with `ucrfs run`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
bash scripts/install-deps.sh
bash scripts/build.sh
UCRFS="$ROOT/${UCRFS_BUILD_DIR:-build}/tools/ucrfs"

WORK=$(mktemp -d /tmp/ucrfs-demo.XXXXXX)
REG_PID=""
MNT="$WORK/mnt"
cleanup() {
  mountpoint -q "$MNT" 2>/dev/null && { "$UCRFS" umount "$MNT" || umount -l "$MNT"; }
  if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Building a demo image from busybox-static"
mkdir -p "$WORK/rootfs/bin" "$WORK/rootfs/etc" "$WORK/rootfs/tmp"
cp /bin/busybox "$WORK/rootfs/bin/busybox"
for app in sh ls cat echo env id uname head wc; do ln -s busybox "$WORK/rootfs/bin/$app"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$WORK/rootfs/etc/passwd"
echo 'hello from a ucrfs demo image' > "$WORK/rootfs/etc/motd"
cd "$WORK"
umoci init --layout demo-oci >/dev/null
umoci new --image demo-oci:latest >/dev/null
umoci insert --rootless --image demo-oci:latest rootfs / >/dev/null
umoci config --image demo-oci:latest --config.entrypoint /bin/sh --config.cmd -c \
  --config.cmd 'cat /etc/motd' --config.env PATH=/bin --config.workingdir / \
  --config.label org.opencontainers.image.title=ucrfs-demo >/dev/null
cd "$ROOT"

step "Starting docker-registry on 127.0.0.1"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: 127.0.0.1:$PORT}
YML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
skopeo copy --quiet --dest-tls-verify=false oci:"$WORK/demo-oci:latest" "docker://127.0.0.1:$PORT/demo:latest"
echo "registry: http://127.0.0.1:$PORT  image: 127.0.0.1:$PORT/demo:latest"

IMAGE="127.0.0.1:$PORT/demo:latest"
STORE="$WORK/store"
step "ucrfs pull $IMAGE"
( set -x; "$UCRFS" --store "$STORE" pull "$IMAGE" )
step "ucrfs inspect $IMAGE"
( set -x; "$UCRFS" --store "$STORE" inspect "$IMAGE" )
step "ucrfs inspect --json $IMAGE (digest and entrypoint)"
"$UCRFS" --store "$STORE" inspect --json "$IMAGE" | python3 -c \
  'import json,sys; j=json.load(sys.stdin); print(j["digest"], j["config"].get("Entrypoint"), j["config"].get("Cmd"))'
step "What the store holds"
find "$STORE/blobs" -type f -printf '%P  %s bytes\n'
step "ucrfs mount $IMAGE $MNT"
mkdir -p "$MNT"
( set -x; "$UCRFS" --store "$STORE" mount "$IMAGE" "$MNT" )
grep " $MNT " /proc/self/mountinfo | awk '{print "mounted:", $5, $9, $10}'
ls -l "$MNT" "$MNT/bin" | head -12
step "Running the image's entrypoint in the mounted rootfs (chroot)"
( set -x; chroot "$MNT" /bin/sh -c 'cat /etc/motd; uname -s; ls /bin | wc -l' )
step "ucrfs run $IMAGE: the image's Entrypoint and Cmd in its own namespaces (lazy, writable rootfs)"
( set -x; "$UCRFS" --store "$STORE" run "$IMAGE" )
step "ucrfs run with arguments: they replace the image's Cmd after its Entrypoint (/bin/sh)"
( set -x; "$UCRFS" --store "$STORE" run "$IMAGE" -- -c 'echo "pid $$ in $(hostname -s 2>/dev/null || uname -n)"; id; echo sandbox=$MESOS_SANDBOX; ls /dev | head -5' )
step "The exit status passes through"
( set -x; "$UCRFS" --store "$STORE" run --shell 'echo wrote > /tmp/x && exit 3' "$IMAGE" ) || echo "(exit status $?)"
step "Nothing of the runs is left behind: no mount under the work dir, no container"
echo "mounts under $STORE/work: $(grep -c " $STORE/work" /proc/self/mountinfo || true)"
"$UCRFS" --store "$STORE" containers

step "ucrfs images"
"$UCRFS" --store "$STORE" images
step "ucrfs umount $MNT"
( set -x; "$UCRFS" umount "$MNT" )
grep -q " $MNT " /proc/self/mountinfo && echo "still mounted!" || echo "unmounted; no server left"

step "A missing tag fails with one line"
"$UCRFS" --store "$STORE" pull "127.0.0.1:$PORT/demo:nope" || echo "(exit status $?)"
