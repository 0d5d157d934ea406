# What both gateway toolchains share: the Debian cross compiler for MIDWAY_FW_TRIPLET, where
# the target's libraries are found, and the flags the gateway bundle is built with (small,
# hardened, reproducible, and able to find its bundled libraries next to itself).
#
# The target's libraries come from Debian's packages for that architecture, one of two ways:
#  - MIDWAY_FW_SYSROOT empty: multiarch, the -dev:arm64 / -dev:armhf packages installed on this
#    machine next to its own (/usr/lib/<triplet>, /usr/include/<triplet>);
#  - MIDWAY_FW_SYSROOT=DIR: the same packages unpacked into DIR (firmware/build --sysroot), for
#    build machines that cannot or should not install foreign-architecture packages.
set(CMAKE_C_COMPILER "${MIDWAY_FW_TRIPLET}-gcc")
set(MIDWAY_FW_SYSROOT "" CACHE PATH "Unpacked target packages (empty: multiarch packages)")
# try_compile() reads this file again in a scratch project: hand it the same choice.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES MIDWAY_FW_TRIPLET MIDWAY_FW_SYSROOT)

# Host programs from the host; libraries, headers and packages only from the target side, so a
# host library can never end up linked into the gateway binary.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config must see the target's .pc files and nothing of the host's (PKG_CONFIG_LIBDIR
# replaces the default search path; PKG_CONFIG_PATH would only add to it).
set(ENV{PKG_CONFIG_PATH} "")
if(MIDWAY_FW_SYSROOT)
  set(CMAKE_SYSROOT "${MIDWAY_FW_SYSROOT}")
  set(ENV{PKG_CONFIG_SYSROOT_DIR} "${MIDWAY_FW_SYSROOT}")
  set(ENV{PKG_CONFIG_LIBDIR}
      "${MIDWAY_FW_SYSROOT}/usr/lib/${MIDWAY_FW_TRIPLET}/pkgconfig:${MIDWAY_FW_SYSROOT}/usr/share/pkgconfig")
else()
  set(ENV{PKG_CONFIG_SYSROOT_DIR} "")
  set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${MIDWAY_FW_TRIPLET}/pkgconfig:/usr/share/pkgconfig")
endif()

# Reproducible: source and build directories are mapped to fixed names in everything the
# compiler writes (debug info, __FILE__), so the binary and its build id do not depend on where
# the tree was checked out or built. The build directory is mapped last: it usually sits inside
# the source tree (so may the sysroot), and the last matching map wins.
get_filename_component(_mw_fw_src "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)
set(_mw_fw_maps "-ffile-prefix-map=${_mw_fw_src}=.")
if(MIDWAY_FW_SYSROOT)
  # The sysroot's headers appear as the target's own /usr/include, wherever it was unpacked.
  string(APPEND _mw_fw_maps " -ffile-prefix-map=${MIDWAY_FW_SYSROOT}=")
endif()
if(CMAKE_BINARY_DIR)
  string(APPEND _mw_fw_maps " -ffile-prefix-map=${CMAKE_BINARY_DIR}=build")
endif()
# Small: unused functions and data are dropped at link time. Hardened the way Debian builds
# its own packages (stack protector, fortified libc calls, read-only relocations, bound now).
set(CMAKE_C_FLAGS_INIT
    "${_mw_fw_maps} -ffunction-sections -fdata-sections -fstack-protector-strong -D_FORTIFY_SOURCE=2")
set(_mw_fw_ld "-Wl,-O1 -Wl,--as-needed -Wl,--gc-sections -Wl,-z,relro -Wl,-z,now -Wl,--build-id=sha1")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "${_mw_fw_ld}")
# The bundle's libraries sit in ../lib next to bin/. DT_RPATH (--disable-new-dtags), not
# DT_RUNPATH: the loader searches an executable's RPATH for the dependencies of its libraries
# too (libcurl's libnghttp2, libssl, ...), while RUNPATH would only cover the executable's own.
set(CMAKE_EXE_LINKER_FLAGS_INIT "${_mw_fw_ld} -Wl,--disable-new-dtags")
set(CMAKE_BUILD_WITH_INSTALL_RPATH ON)
set(CMAKE_INSTALL_RPATH "$ORIGIN/../lib")
