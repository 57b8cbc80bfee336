/* Shared by the libFuzzer harnesses in tests/fuzz (see README.md). Each harness defines
 * LLVMFuzzerTestOneInput; built with -fsanitize=fuzzer it is a fuzzer, linked with
 * replay_main.c it replays a corpus (the ctest fuzz.replay.* tests). */
#ifndef ONAIR_FUZZ_H
#define ONAIR_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A NUL-terminated copy of the input (for parsers of C strings). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    memcpy(s, data, size);
    s[size] = 0;
    return s;
}

/* An invariant broke: report and abort, so the fuzzer keeps the input as a crash. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
