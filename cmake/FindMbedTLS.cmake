# Finds mbedTLS (Debian 12 ships 2.28 without a pkg-config file; 3.x ships one).
# With MIDWAY_MBEDTLS_PREFIX set (the prefix scripts/build-mbedtls3 installs into) it looks
# there and nowhere else, so the system's 2.28 can never be mixed in; otherwise it honours
# MBEDTLS_ROOT as a hint and then the system paths.
# Defines MbedTLS::mbedtls, MbedTLS::mbedx509, MbedTLS::mbedcrypto and MbedTLS_VERSION.
# Switching MIDWAY_MBEDTLS_PREFIX in an existing build directory: forget the old results.
if(NOT "${MIDWAY_MBEDTLS_PREFIX}" STREQUAL "${_MIDWAY_MBEDTLS_PREFIX_FOUND}")
  unset(MBEDTLS_INCLUDE_DIR CACHE)
  unset(MBEDTLS_LIBRARY CACHE)
  unset(MBEDX509_LIBRARY CACHE)
  unset(MBEDCRYPTO_LIBRARY CACHE)
  set(_MIDWAY_MBEDTLS_PREFIX_FOUND "${MIDWAY_MBEDTLS_PREFIX}" CACHE INTERNAL "")
endif()
if(MIDWAY_MBEDTLS_PREFIX AND NOT EXISTS "${MIDWAY_MBEDTLS_PREFIX}/include/mbedtls/ssl.h")
  message(FATAL_ERROR "MIDWAY_MBEDTLS_PREFIX=${MIDWAY_MBEDTLS_PREFIX} holds no mbedTLS: "
          "build it first with scripts/build-mbedtls3")
endif()
if(MIDWAY_MBEDTLS_PREFIX)
  set(_mbedtls_where PATHS "${MIDWAY_MBEDTLS_PREFIX}" NO_DEFAULT_PATH)
  # Static archives first: that is what the script builds, and a stray shared copy in the
  # prefix must not win.
  set(_mbedtls_suffixes_saved "${CMAKE_FIND_LIBRARY_SUFFIXES}")
  set(CMAKE_FIND_LIBRARY_SUFFIXES .a ${CMAKE_FIND_LIBRARY_SUFFIXES})
else()
  set(_mbedtls_where HINTS ${MBEDTLS_ROOT})
endif()
find_path(MBEDTLS_INCLUDE_DIR mbedtls/ssl.h ${_mbedtls_where} PATH_SUFFIXES include)
find_library(MBEDTLS_LIBRARY mbedtls ${_mbedtls_where} PATH_SUFFIXES lib)
find_library(MBEDX509_LIBRARY mbedx509 ${_mbedtls_where} PATH_SUFFIXES lib)
find_library(MBEDCRYPTO_LIBRARY mbedcrypto ${_mbedtls_where} PATH_SUFFIXES lib)
if(MIDWAY_MBEDTLS_PREFIX)
  set(CMAKE_FIND_LIBRARY_SUFFIXES "${_mbedtls_suffixes_saved}")
  foreach(_v MBEDTLS_INCLUDE_DIR MBEDTLS_LIBRARY MBEDX509_LIBRARY MBEDCRYPTO_LIBRARY)
    # Only the prefix's own copy may be used: never a mix with the system's 2.28.
    string(FIND "${${_v}}" "${MIDWAY_MBEDTLS_PREFIX}/" _mbedtls_at)
    if(${_v} AND NOT _mbedtls_at EQUAL 0)
      message(FATAL_ERROR "${_v}=${${_v}} is outside MIDWAY_MBEDTLS_PREFIX "
              "(${MIDWAY_MBEDTLS_PREFIX})")
    endif()
  endforeach()
endif()

if(MBEDTLS_INCLUDE_DIR)
  foreach(hdr build_info.h version.h)
    if(EXISTS "${MBEDTLS_INCLUDE_DIR}/mbedtls/${hdr}" AND NOT MbedTLS_VERSION)
      file(STRINGS "${MBEDTLS_INCLUDE_DIR}/mbedtls/${hdr}" _ver
           REGEX "^#define MBEDTLS_VERSION_STRING +\"[0-9.]+\"")
      string(REGEX REPLACE ".*\"([0-9.]+)\".*" "\\1" MbedTLS_VERSION "${_ver}")
    endif()
  endforeach()
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(MbedTLS
  REQUIRED_VARS MBEDTLS_LIBRARY MBEDX509_LIBRARY MBEDCRYPTO_LIBRARY MBEDTLS_INCLUDE_DIR
  VERSION_VAR MbedTLS_VERSION)

if(MbedTLS_FOUND AND NOT TARGET MbedTLS::mbedcrypto)
  add_library(MbedTLS::mbedcrypto UNKNOWN IMPORTED)
  set_target_properties(MbedTLS::mbedcrypto PROPERTIES
    IMPORTED_LOCATION "${MBEDCRYPTO_LIBRARY}" INTERFACE_INCLUDE_DIRECTORIES "${MBEDTLS_INCLUDE_DIR}")
  if(MBEDCRYPTO_LIBRARY MATCHES "\\.a$")
    # A static build with MBEDTLS_THREADING_PTHREAD (as Debian configures it) needs pthreads
    # from whoever links it; the shared library brings its own dependency.
    find_package(Threads REQUIRED)
    set_target_properties(MbedTLS::mbedcrypto PROPERTIES INTERFACE_LINK_LIBRARIES Threads::Threads)
  endif()
  add_library(MbedTLS::mbedx509 UNKNOWN IMPORTED)
  set_target_properties(MbedTLS::mbedx509 PROPERTIES
    IMPORTED_LOCATION "${MBEDX509_LIBRARY}" INTERFACE_LINK_LIBRARIES MbedTLS::mbedcrypto)
  add_library(MbedTLS::mbedtls UNKNOWN IMPORTED)
  set_target_properties(MbedTLS::mbedtls PROPERTIES
    IMPORTED_LOCATION "${MBEDTLS_LIBRARY}" INTERFACE_LINK_LIBRARIES MbedTLS::mbedx509)
endif()
mark_as_advanced(MBEDTLS_INCLUDE_DIR MBEDTLS_LIBRARY MBEDX509_LIBRARY MBEDCRYPTO_LIBRARY)
