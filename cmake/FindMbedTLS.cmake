# Finds mbedTLS (Debian 12 ships 2.28 without a pkg-config file; 3.x ships one).
# Honours MBEDTLS_ROOT (for instance the prefix scripts/build-mbedtls3 installs into).
# Defines MbedTLS::mbedtls, MbedTLS::mbedx509, MbedTLS::mbedcrypto and MbedTLS_VERSION.
find_path(MBEDTLS_INCLUDE_DIR mbedtls/ssl.h HINTS ${MBEDTLS_ROOT}/include)
find_library(MBEDTLS_LIBRARY mbedtls HINTS ${MBEDTLS_ROOT}/lib)
find_library(MBEDX509_LIBRARY mbedx509 HINTS ${MBEDTLS_ROOT}/lib)
find_library(MBEDCRYPTO_LIBRARY mbedcrypto HINTS ${MBEDTLS_ROOT}/lib)

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
  add_library(MbedTLS::mbedx509 UNKNOWN IMPORTED)
  set_target_properties(MbedTLS::mbedx509 PROPERTIES
    IMPORTED_LOCATION "${MBEDX509_LIBRARY}" INTERFACE_LINK_LIBRARIES MbedTLS::mbedcrypto)
  add_library(MbedTLS::mbedtls UNKNOWN IMPORTED)
  set_target_properties(MbedTLS::mbedtls PROPERTIES
    IMPORTED_LOCATION "${MBEDTLS_LIBRARY}" INTERFACE_LINK_LIBRARIES MbedTLS::mbedx509)
endif()
mark_as_advanced(MBEDTLS_INCLUDE_DIR MBEDTLS_LIBRARY MBEDX509_LIBRARY MBEDCRYPTO_LIBRARY)
