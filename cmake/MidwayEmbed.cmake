# Compiles .sql files into a C source so the binaries carry their schema; the .sql files stay
# the source of truth and are regenerated into C whenever they change.
#
# midway_embed_sql(<output.c> <symbol> <file>...) defines, in the generated file,
#   const struct mw_schema_file <symbol>[];  const size_t <symbol>_count;
# (struct mw_schema_file is declared in schema/schema_files.h). Files keep the order given.
set(MIDWAY_EMBED_SCRIPT "${CMAKE_CURRENT_LIST_DIR}/embed_sql.cmake")

function(midway_embed_sql output symbol)
  add_custom_command(
    OUTPUT "${output}"
    COMMAND ${CMAKE_COMMAND} -DOUTPUT=${output} -DSYMBOL=${symbol} "-DFILES=${ARGN}"
            -P "${MIDWAY_EMBED_SCRIPT}"
    DEPENDS ${ARGN} "${MIDWAY_EMBED_SCRIPT}"
    COMMENT "Embedding ${symbol} (${output})"
    VERBATIM)
endfunction()
