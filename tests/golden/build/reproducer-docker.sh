#!/bin/sh
# Rebuilds this build's artifacts by hand: fetch, patch, config, kernel, kmod, the
# KVM selftests and the guest image.  Written by `doit build` from the records of
# every stage.
#
# Usage: reproducer.sh OUT   OUT: a new or empty directory; the build dir's layout
#                            (src/linux, kbuild, kmod, artifacts) is made there.
# Environment: PROJECT  the checkout holding patches/, kconfig/, kmod/, images/
#              CACHE    where ccache's directory is (ccache/ under it)
#              BASE_TARBALL, TOOLCHAIN_TARBALL  the package tarballs (their sha256 is
#                       checked); by default base.tar and toolchain.tar beside this
#                       script, else mmdebstrap makes them in OUT.
# Needs what scripts/setup installs and a running dockerd.  Each artifact is
# compared with the record; the script ends non-zero if one differs.
set -eu
if [ $# -ne 1 ]; then echo "usage: $0 OUT" >&2; exit 2; fi
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
if [ -n "$(ls -A "$OUT")" ]; then echo "$0: $OUT is not empty" >&2; exit 2; fi
PROJECT=${PROJECT:-/ROOT}
CACHE=${CACHE:-/ROOT/cache}
differ=0
step() { printf '\n==> %s\n' "$*"; }
# check SHA256 FILE: the input must be the one recorded
check() { echo "$1  $2" | sha256sum -c --quiet - || {
	echo "$2 is not the file this build used" >&2; exit 1; }; }
# compare SHA256 FILE: an artifact, identical or not
compare() { if echo "$1  $2" | sha256sum -c --quiet - 2>/dev/null; then
	echo "identical: $2"; else echo "DIFFERS:   $2"; differ=1; fi; }

# make runs in the toolchain container; its variables are on each line
mkdir -p "$CACHE"/ccache-container

mkdir -p "$OUT"/image
step 'the base package tarball'
if [ -z "${BASE_TARBALL:-}" ] && [ -f "$HERE/base.tar" ]; then BASE_TARBALL="$HERE/base.tar"; fi
if [ -z "${BASE_TARBALL:-}" ]; then
	BASE_TARBALL="$OUT"/image/4444.tar
	SOURCE_DATE_EPOCH=1700000000 mmdebstrap --quiet --variant=minbase --include=kmod --format=tar bookworm "$BASE_TARBALL" http://deb.debian.org/debian
fi
check 4444444444444444444444444444444444444444444444444444444444444444 "$BASE_TARBALL"
docker image inspect kvm-pipeline/base:4444444444444444 >/dev/null 2>&1 ||
	docker import "$BASE_TARBALL" kvm-pipeline/base:4444444444444444
step 'the toolchain package tarball'
if [ -z "${TOOLCHAIN_TARBALL:-}" ] && [ -f "$HERE/toolchain.tar" ]; then TOOLCHAIN_TARBALL="$HERE/toolchain.tar"; fi
if [ -z "${TOOLCHAIN_TARBALL:-}" ]; then
	TOOLCHAIN_TARBALL="$OUT"/image/5555.tar
	SOURCE_DATE_EPOCH=1700000000 mmdebstrap --quiet --variant=minbase --include=bc,bison,build-essential,ccache,cpio,dwarves,flex,kmod,libelf-dev,libssl-dev,perl,rsync,xz-utils,zstd --format=tar bookworm "$TOOLCHAIN_TARBALL" http://deb.debian.org/debian
fi
check 5555555555555555555555555555555555555555555555555555555555555555 "$TOOLCHAIN_TARBALL"
docker image inspect kvm-pipeline/toolchain:5555555555555555 >/dev/null 2>&1 ||
	docker import "$TOOLCHAIN_TARBALL" kvm-pipeline/toolchain:5555555555555555

step 'fetch: debian package=linux-source-6.12 sha256=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa version=6.12.57-1'
mkdir -p "$OUT"/downloads "$OUT"/src/linux
(cd "$OUT"/downloads && apt-get download linux-source-6.12=6.12.57-1)
dpkg-deb -x "$OUT"/downloads/*.deb "$OUT"/downloads/deb
check aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa "$OUT"/downloads/deb/usr/src/linux-source-6.12.tar.xz
tar -I 'xz -T0' -xf "$OUT"/downloads/deb/usr/src/linux-source-6.12.tar.xz -C "$OUT"/src/linux --strip-components=1 --no-same-owner

step patch
check pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp "$PROJECT"/patches/kvm/6.12/0001.patch
(cd "$OUT"/src/linux && GIT_CEILING_DIRECTORIES="$OUT"/src git apply -p1 "$PROJECT"/patches/kvm/6.12/0001.patch)

step 'config: default'
check ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff "$PROJECT"/kconfig/base.config
mkdir -p "$OUT"/kbuild
docker run --rm --network none --user "$(id -u):$(id -g)" -v "$OUT":/build -v "$PROJECT":/project:ro -v "$CACHE"/ccache-container:/cache/ccache -w /build/src/linux -e HOME=/tmp -e 'KBUILD_BUILD_TIMESTAMP=Tue Nov 14 22:13:20 UTC 2023' -e KBUILD_BUILD_USER=kvm-pipeline -e KBUILD_BUILD_HOST=kvm-pipeline -e KBUILD_BUILD_VERSION=1 -e SOURCE_DATE_EPOCH=1700000000 -e LC_ALL=C -e CCACHE_BASEDIR=/build -e CCACHE_DEPEND=1 -e CCACHE_INODECACHE=1 -e CCACHE_DIR=/cache/ccache kvm-pipeline/toolchain:5555555555555555 make -C /build/src/linux O=/build/kbuild ARCH=x86_64 RUSTC=false 'CC=ccache gcc' 'HOSTCC=ccache gcc' tinyconfig
docker run --rm --network none --user "$(id -u):$(id -g)" -v "$OUT":/build -v "$PROJECT":/project:ro -v "$CACHE"/ccache-container:/cache/ccache -w /build/src/linux -e HOME=/tmp -e 'KBUILD_BUILD_TIMESTAMP=Tue Nov 14 22:13:20 UTC 2023' -e KBUILD_BUILD_USER=kvm-pipeline -e KBUILD_BUILD_HOST=kvm-pipeline -e KBUILD_BUILD_VERSION=1 -e SOURCE_DATE_EPOCH=1700000000 -e LC_ALL=C -e CCACHE_BASEDIR=/build -e CCACHE_DEPEND=1 -e CCACHE_INODECACHE=1 -e CCACHE_DIR=/cache/ccache kvm-pipeline/toolchain:5555555555555555 /build/src/linux/scripts/kconfig/merge_config.sh -m -O /build/kbuild /build/kbuild/.config /project/kconfig/base.config
docker run --rm --network none --user "$(id -u):$(id -g)" -v "$OUT":/build -v "$PROJECT":/project:ro -v "$CACHE"/ccache-container:/cache/ccache -w /build/src/linux -e HOME=/tmp -e 'KBUILD_BUILD_TIMESTAMP=Tue Nov 14 22:13:20 UTC 2023' -e KBUILD_BUILD_USER=kvm-pipeline -e KBUILD_BUILD_HOST=kvm-pipeline -e KBUILD_BUILD_VERSION=1 -e SOURCE_DATE_EPOCH=1700000000 -e LC_ALL=C -e CCACHE_BASEDIR=/build -e CCACHE_DEPEND=1 -e CCACHE_INODECACHE=1 -e CCACHE_DIR=/cache/ccache kvm-pipeline/toolchain:5555555555555555 make -C /build/src/linux O=/build/kbuild ARCH=x86_64 RUSTC=false 'CC=ccache gcc' 'HOSTCC=ccache gcc' olddefconfig
check cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc "$OUT"/kbuild/.config

step 'kernel: Linux 6.12.57'
docker run --rm --network none --user "$(id -u):$(id -g)" -v "$OUT":/build -v "$PROJECT":/project:ro -v "$CACHE"/ccache-container:/cache/ccache -w /build -e HOME=/tmp -e 'KBUILD_BUILD_TIMESTAMP=Tue Nov 14 22:13:20 UTC 2023' -e KBUILD_BUILD_USER=kvm-pipeline -e KBUILD_BUILD_HOST=kvm-pipeline -e KBUILD_BUILD_VERSION=1 -e SOURCE_DATE_EPOCH=1700000000 -e LC_ALL=C -e CCACHE_BASEDIR=/build -e CCACHE_DEPEND=1 -e CCACHE_INODECACHE=1 -e CCACHE_DIR=/cache/ccache kvm-pipeline/toolchain:5555555555555555 make -C /build/src/linux O=/build/kbuild ARCH=x86_64 RUSTC=false -j2 'CC=ccache gcc' 'HOSTCC=ccache gcc' bzImage modules
mkdir -p "$OUT"/artifacts
docker run --rm --network none --user "$(id -u):$(id -g)" -v "$OUT":/build -v "$PROJECT":/project:ro -v "$CACHE"/ccache-container:/cache/ccache -w /build -e HOME=/tmp -e 'KBUILD_BUILD_TIMESTAMP=Tue Nov 14 22:13:20 UTC 2023' -e KBUILD_BUILD_USER=kvm-pipeline -e KBUILD_BUILD_HOST=kvm-pipeline -e KBUILD_BUILD_VERSION=1 -e SOURCE_DATE_EPOCH=1700000000 -e LC_ALL=C -e CCACHE_BASEDIR=/build -e CCACHE_DEPEND=1 -e CCACHE_INODECACHE=1 -e CCACHE_DIR=/cache/ccache kvm-pipeline/toolchain:5555555555555555 make -C /build/src/linux O=/build/kbuild ARCH=x86_64 RUSTC=false 'CC=ccache gcc' 'HOSTCC=ccache gcc' modules_install INSTALL_MOD_PATH=/build/staging DEPMOD=/sbin/depmod
rm -f "$OUT"/staging/lib/modules/6.12.57/build "$OUT"/staging/lib/modules/6.12.57/source
mv "$OUT"/staging/lib/modules/6.12.57 "$OUT"/artifacts/modules
rm -rf "$OUT"/staging
cp "$OUT"/kbuild/arch/x86/boot/bzImage "$OUT"/artifacts/bzImage
cp "$OUT"/kbuild/System.map "$OUT"/artifacts/System.map
cp "$OUT"/kbuild/.config "$OUT"/artifacts/kernel.config

step kmod
mkdir -p "$OUT"/kmod "$OUT"/artifacts/kmod
check 3333333333333333333333333333333333333333333333333333333333333333 "$PROJECT"/kmod/sched_inject_main.c
cp "$PROJECT"/kmod/sched_inject_main.c "$OUT"/kmod
docker run --rm --network none --user "$(id -u):$(id -g)" -v "$OUT":/build -v "$PROJECT":/project:ro -v "$CACHE"/ccache-container:/cache/ccache -w /build -e HOME=/tmp -e 'KBUILD_BUILD_TIMESTAMP=Tue Nov 14 22:13:20 UTC 2023' -e KBUILD_BUILD_USER=kvm-pipeline -e KBUILD_BUILD_HOST=kvm-pipeline -e KBUILD_BUILD_VERSION=1 -e SOURCE_DATE_EPOCH=1700000000 -e LC_ALL=C -e CCACHE_BASEDIR=/build -e CCACHE_DEPEND=1 -e CCACHE_INODECACHE=1 -e CCACHE_DIR=/cache/ccache kvm-pipeline/toolchain:5555555555555555 make -C /build/src/linux O=/build/kbuild ARCH=x86_64 RUSTC=false -j2 'CC=ccache gcc' 'HOSTCC=ccache gcc' M=/build/kmod W=1 modules
cp "$OUT"/kmod/sched_inject.ko "$OUT"/artifacts/kmod

step 'selftests: the KVM selftests, kselftest install'
mkdir -p "$OUT"/selftests
docker run --rm --network none --user "$(id -u):$(id -g)" -v "$OUT":/build -v "$PROJECT":/project:ro -v "$CACHE"/ccache-container:/cache/ccache -w /build -e HOME=/tmp -e 'KBUILD_BUILD_TIMESTAMP=Tue Nov 14 22:13:20 UTC 2023' -e KBUILD_BUILD_USER=kvm-pipeline -e KBUILD_BUILD_HOST=kvm-pipeline -e KBUILD_BUILD_VERSION=1 -e SOURCE_DATE_EPOCH=1700000000 -e LC_ALL=C -e CCACHE_BASEDIR=/build -e CCACHE_DEPEND=1 -e CCACHE_INODECACHE=1 -e CCACHE_DIR=/cache/ccache kvm-pipeline/toolchain:5555555555555555 make -C /build/src/linux O=/build/selftests ARCH=x86_64 headers_install
docker run --rm --network none --user "$(id -u):$(id -g)" -v "$OUT":/build -v "$PROJECT":/project:ro -v "$CACHE"/ccache-container:/cache/ccache -w /build -e HOME=/tmp -e 'KBUILD_BUILD_TIMESTAMP=Tue Nov 14 22:13:20 UTC 2023' -e KBUILD_BUILD_USER=kvm-pipeline -e KBUILD_BUILD_HOST=kvm-pipeline -e KBUILD_BUILD_VERSION=1 -e SOURCE_DATE_EPOCH=1700000000 -e LC_ALL=C -e CCACHE_BASEDIR=/build -e CCACHE_DEPEND=1 -e CCACHE_INODECACHE=1 -e CCACHE_DIR=/cache/ccache kvm-pipeline/toolchain:5555555555555555 make -C /build/src/linux/tools/testing/selftests O=/build/selftests TARGETS=kvm ARCH=x86_64 -j2 EXTRA_CFLAGS=-ffile-prefix-map=/build/= INSTALL_PATH=/build/selftests/install install
mv "$OUT"/selftests/install "$OUT"/artifacts/selftests

step 'image: docker build of the rendered Dockerfile kept beside this script'
check 6666666666666666666666666666666666666666666666666666666666666666 "$PROJECT"/images/init
mkdir -p "$OUT"/image/context
cp -a "$PROJECT"/images/. "$OUT"/image/context
find "$OUT"/image/context -name '*.j2' -delete
cp -a "$OUT"/artifacts/modules "$OUT"/image/context/modules
cp "$OUT"/artifacts/kernel.config "$OUT"/image/context/kernel.config
cp -a "$OUT"/artifacts/kmod "$OUT"/image/context/kmod
cp -a "$OUT"/artifacts/selftests "$OUT"/image/context/selftests
cp "$HERE/Dockerfile" "$OUT"/image/context/Dockerfile
docker build -t kvm-pipeline/guest:6.12.57 "$OUT"/image/context
step 'image: export, normalise, ext4'
container=$(docker create kvm-pipeline/guest:6.12.57 /bin/true)
docker export -o "$OUT"/image/rootfs.tar "$container"
docker rm "$container" >/dev/null
mkdir "$OUT"/image/rootfs
tar -xf "$OUT"/image/rootfs.tar -C "$OUT"/image/rootfs --numeric-owner
rm -f "$OUT"/image/rootfs/.dockerenv "$OUT"/image/rootfs/etc/hosts "$OUT"/image/rootfs/etc/hostname "$OUT"/image/rootfs/etc/resolv.conf
echo guest >"$OUT"/image/rootfs/etc/hostname
printf '127.0.0.1\tlocalhost guest\n' >"$OUT"/image/rootfs/etc/hosts
find "$OUT"/image/rootfs -exec touch -h -d @1700000000 '{}' +
E2FSPROGS_FAKE_TIME=1700000000 mkfs.ext4 -q -F -L rootfs -U u -E hash_seed=u,root_owner=0:0 -d "$OUT"/image/rootfs "$OUT"/artifacts/rootfs.ext4 1024M
# mkfs -d copies ctime and atime, which no one can set: pin them with debugfs
(cd "$OUT"/image/rootfs && { echo; find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort; }) |
	while IFS= read -r p; do printf 'sif "/%s" ctime @1700000000\nsif "/%s" atime @1700000000\n' "$p" "$p"; done >"$OUT"/image/pin-times.debugfs
E2FSPROGS_FAKE_TIME=1700000000 debugfs -w -f "$OUT"/image/pin-times.debugfs "$OUT"/artifacts/rootfs.ext4 >/dev/null

step 'compare with the recorded artifacts'
compare bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb "$OUT"/artifacts/bzImage
compare 2222222222222222222222222222222222222222222222222222222222222222 "$OUT"/artifacts/kmod/sched_inject.ko
compare 1111111111111111111111111111111111111111111111111111111111111111 "$OUT"/artifacts/modules/kernel/arch/x86/kvm/kvm.ko
compare 9999999999999999999999999999999999999999999999999999999999999999 "$OUT"/artifacts/selftests/kvm/state_test
compare 8888888888888888888888888888888888888888888888888888888888888888 "$OUT"/artifacts/rootfs.ext4
if [ "$differ" -ne 0 ]; then echo "some artifacts differ" >&2; exit 1; fi
echo "every artifact is identical to the recorded build"
