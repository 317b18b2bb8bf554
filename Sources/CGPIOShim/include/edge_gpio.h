#ifndef EDGE_GPIO_H
#define EDGE_GPIO_H

/* A small C shim over libgpiod for one output line (the status LED). libgpiod is loaded at run
 * time (dlopen): 2.x (libgpiod.so.3: Debian 13, newer systems) if present, else 1.x
 * (libgpiod.so.2: Debian 12, Ubuntu 22.04), so one binary serves both and nothing needs
 * libgpiod at build time. */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct edge_gpio_line edge_gpio_line;

/* Requests `offset` on `chip` ("gpiochip0", "/dev/gpiochip0"; on 1.x also a number or label)
 * as an output, initially off. Returns NULL and sets *error to an errno value on failure;
 * ELIBACC when no usable libgpiod is installed (edge_gpio_library_error() says why). */
edge_gpio_line *edge_gpio_open(const char *chip, unsigned int offset, int active_low, const char *consumer, int *error);

/* Drives the line: on != 0 lights the LED (active-low handled by the library). 0 or -errno. */
int edge_gpio_set(edge_gpio_line *line, int on);

/* Releases the line and closes the chip. */
void edge_gpio_close(edge_gpio_line *line);

/* "libgpiod 1.6.3" or "libgpiod 2.2.1"; "libgpiod not installed". */
const char *edge_gpio_library_version(void);

/* Why no libgpiod could be loaded, with the package to install; "" when one was. */
const char *edge_gpio_library_error(void);

#ifdef __cplusplus
}
#endif

#endif
