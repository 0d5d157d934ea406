# firmware/common.sh - sourced by firmware/build and firmware/test: the two gateway targets,
# the Debian packages each needs, and how the target's libraries are made available (multiarch
# packages installed on this machine, or the same packages unpacked into a private sysroot).
# shellcheck shell=bash
# The FW_* variables are for the scripts that source this file; package lists are split on
# purpose.
# shellcheck disable=SC2034,SC2086,SC2016

fw_die() { echo "firmware: $*" >&2; exit 1; }
fw_note() { echo "firmware: $*" >&2; }

# fw_arch ARCH: sets the FW_* variables for aarch64 or armhf.
fw_arch() {
    FW_ARCH=$1
    case "$FW_ARCH" in
        aarch64)
            FW_DEBARCH=arm64
            FW_TRIPLET=aarch64-linux-gnu
            FW_QEMU=qemu-aarch64
            FW_LDSO=/lib/ld-linux-aarch64.so.1
            # What the unit's SystemCallArchitectures= allows: the kernel's own ABI.
            FW_SYSCALL_ARCH=native ;;
        armhf)
            FW_DEBARCH=armhf
            FW_TRIPLET=arm-linux-gnueabihf
            FW_QEMU=qemu-arm
            FW_LDSO=/lib/ld-linux-armhf.so.3
            # 32-bit userlands often run on a 64-bit kernel (Raspberry Pi OS, many SoC vendor
            # images), where "native" would be arm64 and would kill this 32-bit binary.
            FW_SYSCALL_ARCH=arm ;;
        *) fw_die "unknown target '$FW_ARCH' (aarch64 or armhf)" ;;
    esac
    FW_TOOLCHAIN="$FW_ROOT/firmware/toolchains/$FW_TRIPLET.cmake"
    # Host tools: the cross compiler and binutils, and qemu-user for the emulated test.
    FW_HOST_PACKAGES="cmake pkg-config make gzip tar gcc-$FW_TRIPLET binutils-$FW_TRIPLET \
libc6-dev-$FW_DEBARCH-cross qemu-user"
    # The agent's libraries for the target (libc comes with them in a private sysroot).
    FW_TARGET_DEV="libsqlite3-dev libcurl4-openssl-dev libcjson-dev zlib1g-dev"
    FW_TARGET_PACKAGES=""
    local p
    for p in $FW_TARGET_DEV; do FW_TARGET_PACKAGES="$FW_TARGET_PACKAGES $p:$FW_DEBARCH"; done
    FW_CACHE=${MIDWAY_FW_CACHE:-$FW_ROOT/build/firmware/cache}
    FW_SYSROOT_DIR="$FW_CACHE/sysroot-$FW_ARCH"
}

# The version the bundle carries: project(midway VERSION x.y.z) in the top CMakeLists.txt.
fw_version() {
    sed -n 's/^project(midway VERSION \([0-9][0-9.]*\).*/\1/p' "$FW_ROOT/CMakeLists.txt" | head -n 1
}

fw_missing() {
    local missing="" p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            missing="$missing $p"
        fi
    done
    echo "$missing"
}

fw_is_root() { [ "$(id -u)" -eq 0 ]; }

# A failed `apt-get update` usually means one index could not be fetched (a mirror in the
# middle of a sync); apt keeps the lists it had, which are often enough, so go on and let the
# install say whether they were.
fw_apt_update() {
    apt-get update -qq || fw_note "apt-get update reported errors; going on with the package lists it has"
}

fw_apt_install() {
    # shellcheck disable=SC2068
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $@ >/dev/null
}

fw_has_foreign_arch() {
    [ "$FW_DEBARCH" = "$(dpkg --print-architecture)" ] ||
        dpkg --print-foreign-architectures | grep -qx "$FW_DEBARCH"
}

# Installs the host tools (as root), or prints the command and stops.
fw_ensure_host_tools() {
    local missing
    missing=$(fw_missing $FW_HOST_PACKAGES)
    [ -z "$missing" ] && return 0
    if ! fw_is_root; then
        fw_note "missing Debian packages:$missing"
        echo "Install them with:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends$missing" >&2
        exit 1
    fi
    fw_note "installing:$missing"
    fw_apt_update
    # shellcheck disable=SC2086
    fw_apt_install $missing || fw_die "apt-get install$missing failed"
}

# Chooses where the target's libraries come from and sets FW_SYSROOT ("" = multiarch).
# $1 = 1 forces the private sysroot.
fw_ensure_target() {
    local want_sysroot=$1 missing added_arch
    FW_SYSROOT=""
    if [ "$want_sysroot" = 1 ]; then
        fw_make_sysroot
        return 0
    fi
    missing=$(fw_missing $FW_TARGET_PACKAGES)
    [ -z "$missing" ] && return 0
    if [ -f "$FW_SYSROOT_DIR/.midway-packages" ]; then
        fw_note "using the private sysroot $FW_SYSROOT_DIR (the :$FW_DEBARCH packages are not installed)"
        fw_make_sysroot
        return 0
    fi
    if ! fw_is_root; then
        fw_note "missing Debian packages for $FW_ARCH:$missing"
        echo "Install them with:" >&2
        fw_has_foreign_arch || echo "  sudo dpkg --add-architecture $FW_DEBARCH" >&2
        echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends$missing" >&2
        echo "or unpack them into a private sysroot instead: firmware/build --sysroot $FW_ARCH" >&2
        echo "(as root the first time, to fetch the $FW_DEBARCH package lists)" >&2
        exit 1
    fi
    added_arch=0
    if ! fw_has_foreign_arch; then
        added_arch=1
        fw_note "adding the $FW_DEBARCH architecture to dpkg"
        dpkg --add-architecture "$FW_DEBARCH"
        fw_apt_update
    fi
    fw_note "installing:$missing"
    if fw_apt_install $missing; then
        return 0
    fi
    # Nothing of that architecture got installed: take it out of dpkg again, so that this
    # machine's own `apt-get update` does not keep failing on the lagging index.
    if [ "$added_arch" = 1 ] && [ -z "$(dpkg-query -W -f='${Package}\n' "*:$FW_DEBARCH" 2>/dev/null)" ]; then
        dpkg --remove-architecture "$FW_DEBARCH" || true
    fi
    # Multiarch needs the :$FW_DEBARCH copy of every shared package at exactly the version
    # installed for the host; when a mirror lags for one architecture that cannot hold.
    fw_note "apt cannot install the :$FW_DEBARCH packages next to this machine's own (usually"
    fw_note "the $FW_DEBARCH index lags the host's security updates). Unpacking the same packages"
    fw_note "into a private sysroot instead ($FW_SYSROOT_DIR); see firmware/build --sysroot."
    fw_make_sysroot
}

# apt options that make the target's packages visible without adding the architecture to
# dpkg: the sysroot only downloads them, and a foreign architecture left in dpkg would make
# every later `apt-get update` on this machine fail while a mirror lags for it.
fw_apt_arch_opts() {
    local a
    FW_APT_ARCH=(-o "APT::Architectures::=$(dpkg --print-architecture)")
    for a in $(dpkg --print-foreign-architectures) "$FW_DEBARCH"; do
        FW_APT_ARCH+=(-o "APT::Architectures::=$a")
    done
}

# The packages a private sysroot holds: the -dev packages, libc6-dev, and everything they
# depend on for the target architecture.
fw_sysroot_packages() {
    apt-cache "${FW_APT_ARCH[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances $FW_TARGET_PACKAGES "libc6-dev:$FW_DEBARCH" 2>/dev/null |
        grep -v '^ ' | grep ":$FW_DEBARCH\$" | LC_ALL=C sort -u
}

# Downloads the target's packages with apt (verified against the signed package lists) and
# unpacks them into FW_SYSROOT_DIR; reused while the package versions stay the same.
fw_make_sysroot() {
    local pkgs want debs="$FW_CACHE/debs-$FW_ARCH" d l t pkg ver
    fw_apt_arch_opts
    if ! apt-cache "${FW_APT_ARCH[@]}" show "libc6:$FW_DEBARCH" >/dev/null 2>&1; then
        if ! fw_is_root; then
            fw_note "apt has no $FW_DEBARCH package lists; as root run:"
            echo "  apt-get ${FW_APT_ARCH[*]} update" >&2
            exit 1
        fi
        fw_note "fetching the $FW_DEBARCH package lists"
        apt-get "${FW_APT_ARCH[@]}" update -qq ||
            fw_note "apt-get update reported errors; going on with the package lists it has"
        apt-cache "${FW_APT_ARCH[@]}" show "libc6:$FW_DEBARCH" >/dev/null 2>&1 ||
            fw_die "still no $FW_DEBARCH package lists"
    fi
    pkgs=$(fw_sysroot_packages)
    [ -n "$pkgs" ] || fw_die "apt-cache found no $FW_DEBARCH packages for$FW_TARGET_PACKAGES"
    # shellcheck disable=SC2086
    want=$(apt-get "${FW_APT_ARCH[@]}" download --print-uris $pkgs | awk '{print $2}' | LC_ALL=C sort)
    [ -n "$want" ] || fw_die "apt-get download --print-uris gave nothing for the sysroot"
    FW_SYSROOT=$FW_SYSROOT_DIR
    if [ -f "$FW_SYSROOT/.midway-packages" ] && [ "$(cat "$FW_SYSROOT/.midway-packages")" = "$want" ]; then
        return 0
    fi
    fw_note "unpacking $(echo "$want" | wc -l) $FW_DEBARCH packages into $FW_SYSROOT"
    rm -rf "$debs" "$FW_SYSROOT"
    mkdir -p "$debs" "$FW_SYSROOT"
    # shellcheck disable=SC2086
    (cd "$debs" && apt-get "${FW_APT_ARCH[@]}" download -q -o APT::Sandbox::User=root $pkgs >/dev/null) || fw_die "apt-get download failed"
    : >"$FW_SYSROOT/.midway-files"
    for d in "$debs"/*.deb; do
        dpkg-deb -x "$d" "$FW_SYSROOT"
        # Which package each file came from, for the bundle's manifest and licences.
        pkg=$(dpkg-deb --show --showformat='${Package}' "$d")
        ver=$(dpkg-deb --show --showformat='${Version}' "$d")
        dpkg-deb -c "$d" | awk -v p="$pkg" -v v="$ver" '{ sub(/^\./, "", $6); print $6 "\t" p "\t" v }' \
            >>"$FW_SYSROOT/.midway-files"
    done
    # Debian's -dev symlinks are absolute (libz.so -> /lib/<triplet>/libz.so.1.2.13): inside a
    # sysroot they must point into it, or the linker silently falls back to a static archive.
    find "$FW_SYSROOT" -type l -lname '/*' | while read -r l; do
        t=$(readlink "$l")
        ln -sfn "$FW_SYSROOT$t" "$l"
    done
    echo "$want" >"$FW_SYSROOT/.midway-packages"
}

# fw_lib_dirs: where the target's shared libraries live, in the loader's order.
fw_lib_dirs() {
    if [ -n "$FW_SYSROOT" ]; then
        echo "$FW_SYSROOT/lib/$FW_TRIPLET $FW_SYSROOT/usr/lib/$FW_TRIPLET"
    else
        echo "/lib/$FW_TRIPLET /usr/lib/$FW_TRIPLET /usr/$FW_TRIPLET/lib"
    fi
}

# glibc itself: every target root filesystem has it, and it must match the device's kernel
# interface and locale files, so the bundle never carries it.
fw_is_libc() {
    case "$1" in
        ld-linux*.so.* | libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | \
            libresolv.so.2 | libutil.so.1 | libanl.so.1 | libBrokenLocale.so.1 | libmvec.so.1 | \
            libnss_*.so.2 | libthread_db.so.1 | libc_malloc_debug.so.0) return 0 ;;
    esac
    return 1
}

# fw_find_lib SONAME: prints the real file that SONAME resolves to on the target side.
fw_find_lib() {
    local d f
    for d in $(fw_lib_dirs); do
        f="$d/$1"
        if [ -e "$f" ]; then
            readlink -f "$f"
            return 0
        fi
    done
    return 1
}

# fw_lib_package FILE: "package version" that installed FILE (a path from fw_find_lib).
fw_lib_package() {
    local f=$1 rel line pkg
    if [ -n "$FW_SYSROOT" ]; then
        rel=${f#"$FW_SYSROOT"}
        awk -F '\t' -v f="$rel" '$1 == f { print $2 " " $3; exit }' "$FW_SYSROOT/.midway-files"
        return 0
    fi
    # /lib and /usr/lib are one directory on a merged-/usr host, but dpkg knows each file
    # under the path its package shipped it at: search by the name below the triplet.
    line=$(dpkg -S "*/$FW_TRIPLET/$(basename "$f")" 2>/dev/null | grep "^[^:]*:$FW_DEBARCH: " | head -n 1)
    pkg=${line%%:*}
    [ -n "$pkg" ] || return 0
    echo "$pkg $(dpkg-query -W -f='${Version}' "$pkg:$FW_DEBARCH")"
}

# fw_doc_dir PACKAGE: the directory holding PACKAGE's copyright file.
fw_doc_dir() {
    if [ -n "$FW_SYSROOT" ]; then
        echo "$FW_SYSROOT/usr/share/doc/$1"
    else
        echo "/usr/share/doc/$1"
    fi
}
