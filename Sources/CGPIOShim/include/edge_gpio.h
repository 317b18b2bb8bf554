#ifndef EDGE_GPIO_H
#define EDGE_GPIO_H

/* A small C shim over libgpiod for one output line (the status LED). It builds against
 * libgpiod 1.x (Debian 12: 1.6) and 2.x (Debian 13, newer systems); the header below does not
 * include <gpiod.h>, so Swift sees the same API either way. */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct edge_gpio_line edge_gpio_line;

/* Requests `offset` on `chip` ("gpiochip0", "/dev/gpiochip0"; on 1.x also a number or label)
 * as an output, initially off. Returns NULL and sets *error to an errno value on failure. */
edge_gpio_line *edge_gpio_open(const char *chip, unsigned int offset, int active_low, const char *consumer, int *error);

/* Drives the line: on != 0 lights the LED (active-low handled by the library). 0 or -errno. */
int edge_gpio_set(edge_gpio_line *line, int on);

/* Releases the line and closes the chip. */
void edge_gpio_close(edge_gpio_line *line);

/* "libgpiod 1.6.3" or "libgpiod 2.2.1". */
const char *edge_gpio_library_version(void);

#ifdef __cplusplus
}
#endif

#endif
