#include "datadir.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int datadir_make(const char *dir, char *err, size_t elen)
{
    char *p = strdup(dir);
    if (!p) {
        snprintf(err, elen, "out of memory");
        return -1;
    }
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/')
        p[--n] = '\0';
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0750) != 0 && errno != EEXIST) {
            snprintf(err, elen, "cannot create data directory %s: %s", p, strerror(errno));
            free(p);
            return -1;
        }
        *s = c;
        if (c == '\0')
            break;
    }
    struct stat st;
    int sr = stat(p, &st);
    if (sr != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, elen, "cannot create data directory %s: %s", p,
                 sr != 0 ? strerror(errno) : "not a directory");
        free(p);
        return -1;
    }
    free(p);
    return 0;
}
