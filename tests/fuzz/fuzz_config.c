/* The YAML configuration loader as onaird runs it on -c FILE (core/settings.c): parse,
 * ${VAR} expansion, validation against the core schema, then the plugin files of
 * plugins.conf_dir. The input is written to a file in a private temporary directory. */
#include "fuzz.h"

#include <unistd.h>

#include "config.h"
#include "settings.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[256];
    if (!path[0]) {
        /* /dev/shm when there is one: a file on disk per input made the run wait on the
         * disk more than it parsed */
        char shm[] = "/dev/shm/onair-fuzz-config.XXXXXX";
        char tmp[] = "/tmp/onair-fuzz-config.XXXXXX";
        const char *dir = mkdtemp(shm);
        if (!dir)
            dir = mkdtemp(tmp);
        FUZZ_CHECK(dir);
        snprintf(path, sizeof path, "%s/onair.yaml", dir);
        setenv("ONAIR_FUZZ_VAR", "fuzz", 1);
    }
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f);
    FUZZ_CHECK(fwrite(data, 1, size, f) == size);
    fclose(f);
    settings_t s;
    cfg_errors_t errs = {0};
    if (settings_load(path, &s, &errs) == 0) {
        FUZZ_CHECK(errs.n == 0);
        settings_int(&s, "server.port");
        settings_string(&s, "storage.backend");
    } else {
        FUZZ_CHECK(errs.n > 0);
    }
    settings_free(&s);
    cfg_errors_free(&errs);
    return 0;
}
