# Warning flags for every Midway target, and the sanitizer switch.
set(MIDWAY_WARNING_FLAGS
    -Wall -Wextra -Wformat=2 -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla
    -Wconversion -Wno-sign-conversion)
if(MIDWAY_WERROR)
  list(APPEND MIDWAY_WARNING_FLAGS -Werror)
endif()

if(MIDWAY_SANITIZE)
  # -fno-sanitize-recover: a UB report must fail the test, not scroll past.
  add_compile_options(-fsanitize=${MIDWAY_SANITIZE} -fno-sanitize-recover=all
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${MIDWAY_SANITIZE})
endif()

# Applies the project's warnings to a target (not to generated code or third-party headers).
function(midway_warnings target)
  target_compile_options(${target} PRIVATE ${MIDWAY_WARNING_FLAGS})
endfunction()
