/* onaird: the onair daemon. See docs/configuration.md for the flags. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accounts.h"
#include "config.h"
#include "host_run.h"
#include "loader.h"
#include "log.h"
#include "settings.h"
#include "store/store.h"

#define DEFAULT_CONFIG "/etc/onair/onair.yaml"

static void usage(FILE *f)
{
    fprintf(f, "usage: onaird [-c FILE] [--check-config | --print-config | --list-plugins |\n"
               "               --export DIR | --import DIR | --create-admin NAME [--email ADDR]]\n"
               "              [--log-level error|warn|info|debug] [--log-format text|json]\n"
               "              [--version] [--help]\n"
               "  -c, --config FILE   main configuration (default " DEFAULT_CONFIG ")\n"
               "  --check-config      validate every file and enabled plugin, exit 0 or 1\n"
               "  --print-config      print the effective configuration, secrets redacted\n"
               "  --list-plugins      list configured plugins and whether they load\n"
               "  --export DIR        write every stored collection to DIR/<name>.jsonl\n"
               "  --import DIR        load DIR/*.jsonl into the configured storage\n"
               "  --create-admin NAME create (or promote) an admin account; password from\n"
               "                      ONAIR_ADMIN_PASSWORD or the first line of stdin\n"
               "  --email ADDRESS     with --create-admin (default NAME@localhost)\n"
               "  --log-level LEVEL   override logging.level\n"
               "  --log-format FMT    override logging.format\n");
}

static void print_errors(cfg_errors_t *e)
{
    for (size_t i = 0; i < e->n; i++)
        fprintf(stderr, "%s\n", e->msgs[i]);
}

/* Load settings and (without init) every enabled plugin. Returns 0 if all is valid. */
static int load_for_inspection(const char *path, settings_t *s, struct host *h, cfg_errors_t *e)
{
    if (settings_load(path, s, e) < 0)
        return -1;
    g_host = h;
    return loader_load(h, s, e);
}

static int print_config(settings_t *s, struct host *h)
{
    json_t *out = json_object();
    json_t *core = cfg_redact(s->core, core_schema);
    json_object_set_new(out, "core", core);
    json_t *plugins = json_object();
    for (size_t i = 0; i < h->nplugins; i++) {
        struct onair_plugin *p = h->plugins[i];
        json_t *o = json_pack("{s:b,s:b,s:s}", "enabled", p->enabled, "required", p->required,
                              "path", p->file ? p->file : "");
        if (p->config)
            json_object_set_new(o, "config",
                                p->desc.config ? cfg_redact(p->config, p->desc.config)
                                               : json_deep_copy(p->config));
        json_object_set_new(plugins, p->name, o);
    }
    json_object_set_new(out, "plugins", plugins);
    char *txt = json_dumps(out, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(out);
    if (!txt)
        return 1;
    printf("# effective configuration (JSON is valid YAML); secrets shown as \"***\"\n%s\n", txt);
    free(txt);
    return 0;
}

static void list_plugins(struct host *h)
{
    printf("%-16s %-8s %-10s %-10s %s\n", "NAME", "ENABLED", "VERSION", "STATE", "FILE / ERROR");
    for (size_t i = 0; i < h->nplugins; i++) {
        struct onair_plugin *p = h->plugins[i];
        printf("%-16s %-8s %-10s %-10s %s\n", p->name, p->enabled ? "yes" : "no",
               p->desc.version ? p->desc.version : "-", loader_state_name(p->state),
               p->error  ? p->error
               : p->file ? p->file
                         : "-");
    }
}

/* onaird --create-admin NAME [--email ADDRESS]: the password from ONAIR_ADMIN_PASSWORD
 * or the first line of stdin. */
static int create_admin(const char *config, const char *name, const char *email)
{
    char line[1100];
    const char *pw = getenv("ONAIR_ADMIN_PASSWORD");
    if (!pw || !*pw) {
        if (!fgets(line, sizeof line, stdin)) {
            fprintf(stderr, "onaird: --create-admin reads the password from ONAIR_ADMIN_PASSWORD "
                            "or the first line of stdin\n");
            return 1;
        }
        line[strcspn(line, "\r\n")] = 0;
        pw = line;
    }
    settings_t s;
    memset(&s, 0, sizeof s);
    cfg_errors_t errs = {0};
    int rc = 1;
    if (settings_load(config, &s, &errs) < 0) {
        print_errors(&errs);
        fprintf(stderr, "%s: configuration has errors\n", config);
    } else {
        rc = accounts_create_admin(s.core, name, email, pw);
    }
    memset(line, 0, sizeof line);
    cfg_errors_free(&errs);
    settings_free(&s);
    return rc;
}

int main(int argc, char **argv)
{
    enum {
        OPT_CHECK = 256,
        OPT_PRINT,
        OPT_LIST,
        OPT_VERSION,
        OPT_LEVEL,
        OPT_FORMAT,
        OPT_EXPORT,
        OPT_IMPORT,
        OPT_CREATE_ADMIN,
        OPT_EMAIL
    };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, OPT_CHECK},
        {"print-config", no_argument, NULL, OPT_PRINT},
        {"list-plugins", no_argument, NULL, OPT_LIST},
        {"version", no_argument, NULL, OPT_VERSION},
        {"log-level", required_argument, NULL, OPT_LEVEL},
        {"log-format", required_argument, NULL, OPT_FORMAT},
        {"export", required_argument, NULL, OPT_EXPORT},
        {"import", required_argument, NULL, OPT_IMPORT},
        {"create-admin", required_argument, NULL, OPT_CREATE_ADMIN},
        {"email", required_argument, NULL, OPT_EMAIL},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = DEFAULT_CONFIG, *level = NULL, *format = NULL, *data_dir = NULL;
    const char *admin_name = NULL, *admin_email = NULL;
    int mode = 0, c;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case OPT_CHECK:
        case OPT_PRINT:
        case OPT_LIST:
            mode = c;
            break;
        case OPT_VERSION:
            printf("onaird %s (plugin ABI %d.%d)\n", ONAIR_VERSION, ONAIR_ABI_MAJOR,
                   ONAIR_ABI_MINOR);
            return 0;
        case OPT_LEVEL:
            level = optarg;
            break;
        case OPT_FORMAT:
            format = optarg;
            break;
        case OPT_EXPORT:
        case OPT_IMPORT:
            mode = c;
            data_dir = optarg;
            break;
        case OPT_CREATE_ADMIN:
            mode = c;
            admin_name = optarg;
            break;
        case OPT_EMAIL:
            admin_email = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "onaird: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (level && log_level_parse(level) < 0) {
        fprintf(stderr, "onaird: --log-level must be error, warn, info or debug\n");
        return 2;
    }
    if (format && strcmp(format, "text") && strcmp(format, "json")) {
        fprintf(stderr, "onaird: --log-format must be text or json\n");
        return 2;
    }
    /* Command-line log settings apply at once, so config errors are logged that way. */
    log_setup(level ? log_level_parse(level) : ONAIR_LOG_INFO,
              format && !strcmp(format, "json") ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT);

    settings_t s;
    memset(&s, 0, sizeof s);
    cfg_errors_t errs = {0};
    static struct host h;
    int rc = 1;
    if (admin_email && mode != OPT_CREATE_ADMIN) {
        fprintf(stderr, "onaird: --email goes with --create-admin\n");
        return 2;
    }
    if (mode == OPT_CREATE_ADMIN)
        return create_admin(config, admin_name, admin_email);
    if (mode == OPT_EXPORT || mode == OPT_IMPORT) {
        if (settings_load(config, &s, &errs) < 0) {
            print_errors(&errs);
        } else {
            json_t *storage = cfg_json_get(s.core, "storage");
            rc = (mode == OPT_EXPORT ? store_export(storage, data_dir)
                                     : store_import(storage, data_dir)) == 0
                     ? 0
                     : 1;
        }
        cfg_errors_free(&errs);
        settings_free(&s);
        return rc;
    }
    if (mode) {
        int ok = load_for_inspection(config, &s, &h, &errs) == 0 && errs.n == 0;
        print_errors(&errs);
        if (mode == OPT_CHECK) {
            if (ok)
                printf("%s: configuration OK\n", config);
            else
                fprintf(stderr, "%s: configuration has errors\n", config);
            rc = ok ? 0 : 1;
        } else if (mode == OPT_PRINT) {
            rc = ok ? print_config(&s, &h) : 1;
        } else {
            if (s.core)
                list_plugins(&h);
            rc = s.core ? 0 : 1;
        }
        loader_free_all(&h);
        cfg_errors_free(&errs);
        settings_free(&s);
        return rc;
    }

    if (settings_load(config, &s, &errs) < 0) {
        print_errors(&errs);
        fprintf(stderr, "%s: configuration has errors\n", config);
        cfg_errors_free(&errs);
        settings_free(&s);
        return 1;
    }
    cfg_errors_free(&errs);
    const char *lv = level ? level : settings_string(&s, "logging.level");
    const char *fm = format ? format : settings_string(&s, "logging.format");
    log_setup(log_level_parse(lv) < 0 ? ONAIR_LOG_INFO : log_level_parse(lv),
              fm && !strcmp(fm, "json") ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT);
    if (host_start(&h, &s) == 0)
        rc = host_run(&h) == 0 ? 0 : 1;
    host_destroy(&h);
    settings_free(&s);
    return rc;
}
