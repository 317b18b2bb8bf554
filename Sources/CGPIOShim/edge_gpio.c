#include "edge_gpio.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libgpiod is opened at run time, not linked: one binary then runs with libgpiod 1.x
 * (libgpiod.so.2: Debian 12, Raspberry Pi OS, Ubuntu 22.04) and 2.x (libgpiod.so.3: Debian 13
 * and newer), and on a board without libgpiod the agent still starts (without its LED, saying
 * why, unless led.required). Only the
 * few functions one output line needs are looked up; their signatures and constants are those
 * of the two sonames, whose ABIs are frozen. Where a <gpiod.h> is installed at build time, the
 * constants are checked against it below. */

struct gpiod_chip;
struct gpiod_line;
struct gpiod_line_settings;
struct gpiod_line_config;
struct gpiod_request_config;
struct gpiod_line_request;

enum {
    V1_REQUEST_FLAG_ACTIVE_LOW = 1 << 2, /* GPIOD_LINE_REQUEST_FLAG_ACTIVE_LOW */
    V2_DIRECTION_OUTPUT = 3,             /* GPIOD_LINE_DIRECTION_OUTPUT */
    V2_VALUE_INACTIVE = 0,               /* GPIOD_LINE_VALUE_INACTIVE */
    V2_VALUE_ACTIVE = 1,                 /* GPIOD_LINE_VALUE_ACTIVE */
};

#if defined(__has_include)
#if __has_include(<gpiod.h>)
#include <gpiod.h>
#ifdef GPIOD_LINE_BULK_MAX_LINES /* only 1.x has the bulk API */
_Static_assert(GPIOD_LINE_REQUEST_FLAG_ACTIVE_LOW == V1_REQUEST_FLAG_ACTIVE_LOW, "libgpiod 1.x flag");
#else
_Static_assert(GPIOD_LINE_DIRECTION_OUTPUT == V2_DIRECTION_OUTPUT, "libgpiod 2.x direction");
_Static_assert(GPIOD_LINE_VALUE_INACTIVE == V2_VALUE_INACTIVE && GPIOD_LINE_VALUE_ACTIVE == V2_VALUE_ACTIVE, "libgpiod 2.x values");
#endif
#endif
#endif

static struct {
    void *handle;
    int major; /* 1 or 2; 0 when no libgpiod was found */
    char error[256];
    char version[64];
    /* 1.x */
    struct gpiod_chip *(*chip_open_lookup)(const char *);
    struct gpiod_line *(*chip_get_line)(struct gpiod_chip *, unsigned int);
    int (*line_request_output_flags)(struct gpiod_line *, const char *, int, int);
    int (*line_set_value)(struct gpiod_line *, int);
    void (*line_release)(struct gpiod_line *);
    const char *(*version_string)(void);
    /* 2.x */
    struct gpiod_chip *(*chip_open)(const char *);
    struct gpiod_line_settings *(*settings_new)(void);
    void (*settings_free)(struct gpiod_line_settings *);
    int (*settings_set_direction)(struct gpiod_line_settings *, int);
    void (*settings_set_active_low)(struct gpiod_line_settings *, bool);
    int (*settings_set_output_value)(struct gpiod_line_settings *, int);
    struct gpiod_line_config *(*config_new)(void);
    void (*config_free)(struct gpiod_line_config *);
    int (*config_add_line_settings)(struct gpiod_line_config *, const unsigned int *, size_t, struct gpiod_line_settings *);
    struct gpiod_request_config *(*request_config_new)(void);
    void (*request_config_free)(struct gpiod_request_config *);
    void (*request_config_set_consumer)(struct gpiod_request_config *, const char *);
    struct gpiod_line_request *(*chip_request_lines)(struct gpiod_chip *, struct gpiod_request_config *, struct gpiod_line_config *);
    int (*request_set_value)(struct gpiod_line_request *, unsigned int, int);
    void (*request_release)(struct gpiod_line_request *);
    const char *(*api_version)(void);
    /* both */
    void (*chip_close)(struct gpiod_chip *);
} lib;

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

/* Looks up every name in `names`; false (with lib.error set) if one is missing. */
static bool resolve(void *handle, const char *soname, const char *const *names, void **slots[], size_t count) {
    for (size_t i = 0; i < count; i++) {
        *slots[i] = dlsym(handle, names[i]);
        if (!*slots[i]) {
            snprintf(lib.error, sizeof lib.error, "%s lacks %s", soname, names[i]);
            return false;
        }
    }
    return true;
}

/* Opens `soname` and looks up every name; 1 when it is usable. A library that lacks one is
 * closed (lib.error says what it lacks) and its slots cleared. */
static int open_library(const char *soname, const char *const *names, void **slots[], size_t count) {
    void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (!h) return 0;
    if (resolve(h, soname, names, slots, count)) {
        lib.handle = h;
        return 1;
    }
    for (size_t i = 0; i < count; i++) *slots[i] = NULL;
    dlclose(h);
    return 0;
}

static void load(void) {
    /* 2.x first: a system with both (during an upgrade) gets the current one. */
    const char *const v2_names[] = {
        "gpiod_chip_open", "gpiod_line_settings_new", "gpiod_line_settings_free",
        "gpiod_line_settings_set_direction", "gpiod_line_settings_set_active_low",
        "gpiod_line_settings_set_output_value", "gpiod_line_config_new", "gpiod_line_config_free",
        "gpiod_line_config_add_line_settings", "gpiod_request_config_new", "gpiod_request_config_free",
        "gpiod_request_config_set_consumer", "gpiod_chip_request_lines", "gpiod_line_request_set_value",
        "gpiod_line_request_release", "gpiod_api_version", "gpiod_chip_close",
    };
    void **v2_slots[] = {
        (void **)&lib.chip_open, (void **)&lib.settings_new, (void **)&lib.settings_free,
        (void **)&lib.settings_set_direction, (void **)&lib.settings_set_active_low,
        (void **)&lib.settings_set_output_value, (void **)&lib.config_new, (void **)&lib.config_free,
        (void **)&lib.config_add_line_settings, (void **)&lib.request_config_new, (void **)&lib.request_config_free,
        (void **)&lib.request_config_set_consumer, (void **)&lib.chip_request_lines, (void **)&lib.request_set_value,
        (void **)&lib.request_release, (void **)&lib.api_version, (void **)&lib.chip_close,
    };
    if (open_library("libgpiod.so.3", v2_names, v2_slots, sizeof v2_names / sizeof v2_names[0])) {
        lib.major = 2;
        snprintf(lib.version, sizeof lib.version, "libgpiod %s", lib.api_version());
        return;
    }
    const char *const v1_names[] = {
        "gpiod_chip_open_lookup", "gpiod_chip_get_line", "gpiod_line_request_output_flags",
        "gpiod_line_set_value", "gpiod_line_release", "gpiod_version_string", "gpiod_chip_close",
    };
    void **v1_slots[] = {
        (void **)&lib.chip_open_lookup, (void **)&lib.chip_get_line, (void **)&lib.line_request_output_flags,
        (void **)&lib.line_set_value, (void **)&lib.line_release, (void **)&lib.version_string,
        (void **)&lib.chip_close,
    };
    if (open_library("libgpiod.so.2", v1_names, v1_slots, sizeof v1_names / sizeof v1_names[0])) {
        lib.major = 1;
        snprintf(lib.version, sizeof lib.version, "libgpiod %s", lib.version_string());
        return;
    }
    if (lib.error[0]) return; /* one was there but lacked a function: say which */
    snprintf(lib.error, sizeof lib.error,
             "libgpiod is not installed (neither libgpiod.so.3 nor libgpiod.so.2 could be loaded): "
             "apt install libgpiod3 (Debian 13 and newer) or libgpiod2 (Debian 12, Ubuntu 22.04)");
}

static int loaded(void) {
    pthread_once(&lib_once, load);
    return lib.major;
}

struct edge_gpio_line {
    struct gpiod_chip *chip;
    struct gpiod_line *line;             /* 1.x */
    struct gpiod_line_request *request;  /* 2.x */
    unsigned int offset;
};

static edge_gpio_line *open_v1(const char *chip, unsigned int offset, int active_low, const char *consumer, int *error) {
    errno = 0;
    struct gpiod_chip *c = lib.chip_open_lookup(chip);
    if (!c) { *error = errno ? errno : ENODEV; return NULL; }
    struct gpiod_line *l = lib.chip_get_line(c, offset);
    if (!l) { *error = errno ? errno : EINVAL; lib.chip_close(c); return NULL; }
    if (lib.line_request_output_flags(l, consumer, active_low ? V1_REQUEST_FLAG_ACTIVE_LOW : 0, 0) != 0) {
        *error = errno ? errno : EBUSY;
        lib.chip_close(c);
        return NULL;
    }
    edge_gpio_line *out = calloc(1, sizeof *out);
    if (!out) { lib.line_release(l); lib.chip_close(c); *error = ENOMEM; return NULL; }
    out->chip = c;
    out->line = l;
    out->offset = offset;
    return out;
}

static edge_gpio_line *open_v2(const char *chip, unsigned int offset, int active_low, const char *consumer, int *error) {
    char path[256];
    if (chip[0] == '/') snprintf(path, sizeof path, "%s", chip);
    else snprintf(path, sizeof path, "/dev/%s", chip);
    errno = 0;
    struct gpiod_chip *c = lib.chip_open(path);
    if (!c) { *error = errno ? errno : ENODEV; return NULL; }
    struct gpiod_line_settings *settings = lib.settings_new();
    struct gpiod_line_config *config = lib.config_new();
    struct gpiod_request_config *rc = lib.request_config_new();
    struct gpiod_line_request *request = NULL;
    if (settings && config && rc) {
        lib.settings_set_direction(settings, V2_DIRECTION_OUTPUT);
        lib.settings_set_active_low(settings, active_low ? true : false);
        lib.settings_set_output_value(settings, V2_VALUE_INACTIVE);
        if (lib.config_add_line_settings(config, &offset, 1, settings) == 0) {
            lib.request_config_set_consumer(rc, consumer);
            request = lib.chip_request_lines(c, rc, config);
        }
    }
    if (!request) *error = errno ? errno : EBUSY;
    if (settings) lib.settings_free(settings);
    if (config) lib.config_free(config);
    if (rc) lib.request_config_free(rc);
    if (!request) { lib.chip_close(c); return NULL; }
    edge_gpio_line *out = calloc(1, sizeof *out);
    if (!out) { lib.request_release(request); lib.chip_close(c); *error = ENOMEM; return NULL; }
    out->chip = c;
    out->request = request;
    out->offset = offset;
    return out;
}

edge_gpio_line *edge_gpio_open(const char *chip, unsigned int offset, int active_low, const char *consumer, int *error) {
    int unused = 0;
    if (!error) error = &unused;
    switch (loaded()) {
    case 1: return open_v1(chip, offset, active_low, consumer, error);
    case 2: return open_v2(chip, offset, active_low, consumer, error);
    default: *error = ELIBACC; return NULL;
    }
}

int edge_gpio_set(edge_gpio_line *line, int on) {
    errno = 0;
    int rc = lib.major == 1
        ? lib.line_set_value(line->line, on ? 1 : 0)
        : lib.request_set_value(line->request, line->offset, on ? V2_VALUE_ACTIVE : V2_VALUE_INACTIVE);
    return rc == 0 ? 0 : -(errno ? errno : EIO);
}

void edge_gpio_close(edge_gpio_line *line) {
    if (!line) return;
    if (lib.major == 1) lib.line_release(line->line);
    else lib.request_release(line->request);
    lib.chip_close(line->chip);
    free(line);
}

const char *edge_gpio_library_version(void) {
    return loaded() ? lib.version : "libgpiod not installed";
}

const char *edge_gpio_library_error(void) {
    return loaded() ? "" : lib.error;
}
