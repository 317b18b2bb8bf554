#include "edge_gpio.h"

#include <errno.h>
#include <gpiod.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libgpiod 2.x defines no version macro; 1.x defines GPIOD_LINE_BULK_MAX_LINES (the bulk API
 * was removed in 2.0), so that tells the two apart at compile time. */
#ifdef GPIOD_LINE_BULK_MAX_LINES
#define EDGE_GPIOD_V1 1
#else
#define EDGE_GPIOD_V1 0
#endif

struct edge_gpio_line {
    struct gpiod_chip *chip;
#if EDGE_GPIOD_V1
    struct gpiod_line *line;
#else
    struct gpiod_line_request *request;
    unsigned int offset;
#endif
};

static int fail(int *error, int fallback) {
    if (error) *error = errno ? errno : fallback;
    return 0;
}

#if EDGE_GPIOD_V1

edge_gpio_line *edge_gpio_open(const char *chip, unsigned int offset, int active_low, const char *consumer, int *error) {
    errno = 0;
    struct gpiod_chip *c = gpiod_chip_open_lookup(chip);
    if (!c) { fail(error, ENODEV); return NULL; }
    struct gpiod_line *l = gpiod_chip_get_line(c, offset);
    if (!l) { fail(error, EINVAL); gpiod_chip_close(c); return NULL; }
    int flags = active_low ? GPIOD_LINE_REQUEST_FLAG_ACTIVE_LOW : 0;
    if (gpiod_line_request_output_flags(l, consumer, flags, 0) != 0) {
        fail(error, EBUSY);
        gpiod_chip_close(c);
        return NULL;
    }
    edge_gpio_line *out = calloc(1, sizeof *out);
    if (!out) { gpiod_line_release(l); gpiod_chip_close(c); if (error) *error = ENOMEM; return NULL; }
    out->chip = c;
    out->line = l;
    return out;
}

int edge_gpio_set(edge_gpio_line *line, int on) {
    return gpiod_line_set_value(line->line, on ? 1 : 0) == 0 ? 0 : -errno;
}

void edge_gpio_close(edge_gpio_line *line) {
    if (!line) return;
    gpiod_line_release(line->line);
    gpiod_chip_close(line->chip);
    free(line);
}

const char *edge_gpio_library_version(void) {
    static char buf[64];
    snprintf(buf, sizeof buf, "libgpiod %s", gpiod_version_string());
    return buf;
}

#else

edge_gpio_line *edge_gpio_open(const char *chip, unsigned int offset, int active_low, const char *consumer, int *error) {
    char path[256];
    if (chip[0] == '/') snprintf(path, sizeof path, "%s", chip);
    else snprintf(path, sizeof path, "/dev/%s", chip);
    errno = 0;
    struct gpiod_chip *c = gpiod_chip_open(path);
    if (!c) { fail(error, ENODEV); return NULL; }
    struct gpiod_line_settings *settings = gpiod_line_settings_new();
    struct gpiod_line_config *config = gpiod_line_config_new();
    struct gpiod_request_config *rc = gpiod_request_config_new();
    struct gpiod_line_request *request = NULL;
    if (settings && config && rc) {
        gpiod_line_settings_set_direction(settings, GPIOD_LINE_DIRECTION_OUTPUT);
        gpiod_line_settings_set_active_low(settings, active_low ? true : false);
        gpiod_line_settings_set_output_value(settings, GPIOD_LINE_VALUE_INACTIVE);
        if (gpiod_line_config_add_line_settings(config, &offset, 1, settings) == 0) {
            gpiod_request_config_set_consumer(rc, consumer);
            request = gpiod_chip_request_lines(c, rc, config);
        }
    }
    if (!request) fail(error, EBUSY);
    if (settings) gpiod_line_settings_free(settings);
    if (config) gpiod_line_config_free(config);
    if (rc) gpiod_request_config_free(rc);
    if (!request) { gpiod_chip_close(c); return NULL; }
    edge_gpio_line *out = calloc(1, sizeof *out);
    if (!out) { gpiod_line_request_release(request); gpiod_chip_close(c); if (error) *error = ENOMEM; return NULL; }
    out->chip = c;
    out->request = request;
    out->offset = offset;
    return out;
}

int edge_gpio_set(edge_gpio_line *line, int on) {
    enum gpiod_line_value v = on ? GPIOD_LINE_VALUE_ACTIVE : GPIOD_LINE_VALUE_INACTIVE;
    return gpiod_line_request_set_value(line->request, line->offset, v) == 0 ? 0 : -errno;
}

void edge_gpio_close(edge_gpio_line *line) {
    if (!line) return;
    gpiod_line_request_release(line->request);
    gpiod_chip_close(line->chip);
    free(line);
}

const char *edge_gpio_library_version(void) {
    static char buf[64];
    snprintf(buf, sizeof buf, "libgpiod %s", gpiod_api_version());
    return buf;
}

#endif
