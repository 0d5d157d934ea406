/* fuzz.h - what every fuzz target shares: the libFuzzer entry point and the check that stops
 * the run on a broken invariant.
 *
 * A target is one fuzz_<name>.c defining LLVMFuzzerTestOneInput. It must accept any bytes,
 * free everything it allocated (a leak fails the run under ASan), and call FUZZ_CHECK on
 * every invariant it can verify cheaply: a finding is a crash, a sanitizer report, a leak or
 * a failed FUZZ_CHECK. The same source builds as a libFuzzer binary (clang) and behind
 * replay.c (any compiler), which feeds it saved inputs for ctest.
 * Thread safety: a target is called from one thread. */
#ifndef MIDWAY_FUZZ_H
#define MIDWAY_FUZZ_H
#include "mem.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* libFuzzer's fixed name: the one function here without the mw_ prefix. Returns 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* abort() rather than return: libFuzzer and replay.c both report an abort with the input
 * that caused it, and a sanitizer build prints the stack. */
#define FUZZ_CHECK(cond)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* The same with the library's error text, for calls that should have succeeded. */
#define FUZZ_CHECK_OK(rc, err)                                                                   \
    do {                                                                                         \
        if ((rc) != MW_OK) {                                                                     \
            fprintf(stderr, "%s:%d: unexpected failure %d: %s\n", __FILE__, __LINE__, (int)(rc), \
                    (err)->msg);                                                                 \
            abort();                                                                             \
        }                                                                                        \
    } while (0)

/* Allocation-failure runs: a target decodes its input a second time with the nth allocation
 * from now failing (mw_mem_fail_at), n taken from a hash of the input so every input reaches
 * a different cleanup path and a crash still reproduces from the input alone. The decoder
 * must then fail with MW_ENOMEM (or give what it gave without the failure, when it needed
 * fewer allocations) and free everything. Up to 64: decoders of fuzz-sized inputs allocate
 * more than that, so every early exit gets its turn. */
static inline long fuzz_fail_point(const uint8_t *data, size_t size)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 16777619u;
    return 1 + (long)(h % 64u);
}

#endif
