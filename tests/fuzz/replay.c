/* replay.c - main() for builds without libFuzzer: feeds files to LLVMFuzzerTestOneInput, so
 * ctest checks the seed corpus and every saved crash under any compiler and sanitizer.
 *
 * usage: fuzz_<name>_replay PATH...   (a PATH is a file or a directory of files; files whose
 * name starts with '.' are skipped, so a directory may hold a .gitkeep or a README).
 * Exit status 0 when every input ran; a finding aborts (the sanitizer or FUZZ_CHECK names it)
 * after "replay: <file>" says which input it was. A missing PATH is an error, so a renamed
 * corpus directory cannot pass by running nothing. */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Inputs are small by construction (libFuzzer's -max_len); this only guards a wrong PATH. */
#define REPLAY_FILE_MAX (64u * 1024u * 1024u)

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    uint8_t *data = NULL;
    size_t len = 0;
    size_t cap = 0;
    int rc = 0;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            uint8_t *p = ncap <= REPLAY_FILE_MAX ? realloc(data, ncap) : NULL;
            if (!p) {
                fprintf(stderr, "replay: %s: too large or out of memory\n", path);
                rc = -1;
                break;
            }
            data = p;
            cap = ncap;
        }
        size_t got = fread(data + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) {
                fprintf(stderr, "replay: %s: read error\n", path);
                rc = -1;
            }
            break;
        }
    }
    fclose(f);
    if (rc == 0) {
        /* Printed first, so the input is named even when the target aborts. */
        fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
        /* A copy of exactly len bytes: ASan then catches a read one past the input's end,
         * as it would under libFuzzer. */
        uint8_t *exact = malloc(len ? len : 1);
        if (!exact) {
            fprintf(stderr, "replay: %s: out of memory\n", path);
            rc = -1;
        } else {
            if (len)
                memcpy(exact, data, len);
            LLVMFuzzerTestOneInput(exact, len);
            free(exact);
        }
    }
    free(data);
    return rc;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Runs every file in dir, in name order so a run is reproducible. Returns files run, or -1. */
static long run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0;
    size_t cap = 0;
    long done = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char **p = realloc(names, ncap * sizeof(*p));
            if (!p) {
                done = -1;
                break;
            }
            names = p;
            cap = ncap;
        }
        size_t len = strlen(dir) + 1 + strlen(e->d_name) + 1;
        names[n] = malloc(len);
        if (!names[n]) {
            done = -1;
            break;
        }
        snprintf(names[n], len, "%s/%s", dir, e->d_name);
        n++;
    }
    closedir(d);
    if (done == 0 && n > 0)
        qsort(names, n, sizeof(*names), cmp_names);
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (done >= 0 && stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
            if (run_file(names[i]) != 0)
                done = -1;
            else
                done++;
        }
        free(names[i]);
    }
    free(names);
    return done;
}

int main(int argc, char **argv)
{
    long total = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE_OR_DIR...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        long n = 0;
        if (S_ISDIR(st.st_mode))
            n = run_dir(argv[i]);
        else
            n = run_file(argv[i]) == 0 ? 1 : -1;
        if (n < 0)
            return 1;
        total += n;
    }
    printf("replay: %ld inputs ran without a finding\n", total);
    return 0;
}
