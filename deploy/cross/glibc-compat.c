/* Definitions of the few C library functions that Debian sid's static Swift runtime (built
 * against glibc 2.43) references and Debian 12's glibc 2.36 does not export. They are linked
 * into the arm64 release binary only (deploy/cross/aarch64.sh, step `release`), never into a
 * native build. It is an archive of this one object: linked when one of these symbols is needed
 * and nothing else defines it, all of them then.
 *
 * Why this is sound (deploy/cross/README.md, "The glibc floor"):
 * - C23's strto* differ from C11's in one way only: with base 0 or 2 they accept a "0b"/"0B"
 *   prefix. That is added here in front of the C11 function of the same name.
 * - C23's sscanf differs in %i and %b accepting the same prefix; the runtime's format strings
 *   use neither, so the C11 vsscanf serves.
 * - strlcpy/strlcat are the BSD functions glibc adopted in 2.38; these are their exact
 *   semantics (the length of what was tried to be made). */

/* The C11 functions by their C11 names: under C23 or _GNU_SOURCE, the headers of glibc 2.38 and
 * newer make strtol and vsscanf calls to __isoc23_strtol and __isoc23_vsscanf, which this file
 * defines: they would call themselves (seen: a stack overflow on Debian sid with GCC 15, whose
 * default is C23). Compile with -std=c11. */
#undef _GNU_SOURCE
#undef _ISOC2X_SOURCE
#undef _ISOC23_SOURCE
#define _POSIX_C_SOURCE 200809L /* strnlen */
#if defined(__STDC_VERSION__) && __STDC_VERSION__ > 201710L
#error "compile glibc-compat.c with -std=c11: under C23, glibc's headers redirect strtol to __isoc23_strtol, defined here"
#endif

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Where a binary prefix starts in s for this base, or NULL: skips blanks and a sign like strtol. */
static const char *binary_digits(const char *s, int base) {
    if (base != 0 && base != 2) return NULL;
    const char *p = s;
    while (isspace((unsigned char)*p)) p++;
    if (*p == '+' || *p == '-') p++;
    if (p[0] == '0' && (p[1] == 'b' || p[1] == 'B') && (p[2] == '0' || p[2] == '1')) return p + 2;
    return NULL;
}

/* Parses the binary digits at d as an unsigned magnitude; *end after the last digit. */
static unsigned long long binary_value(const char *d, const char **end, int *overflow) {
    unsigned long long v = 0;
    *overflow = 0;
    for (; *d == '0' || *d == '1'; d++) {
        if (v > (ULLONG_MAX >> 1)) *overflow = 1;
        v = (v << 1) | (unsigned long long)(*d - '0');
    }
    *end = d;
    return v;
}

static int negative(const char *s) {
    while (isspace((unsigned char)*s)) s++;
    return *s == '-';
}

long long __isoc23_strtoll(const char *s, char **end, int base) {
    const char *d = binary_digits(s, base);
    if (!d) return strtoll(s, end, base);
    const char *stop;
    int overflow;
    unsigned long long m = binary_value(d, &stop, &overflow);
    if (end) *end = (char *)stop;
    int neg = negative(s);
    unsigned long long limit = neg ? (unsigned long long)LLONG_MAX + 1 : (unsigned long long)LLONG_MAX;
    if (overflow || m > limit) { errno = ERANGE; return neg ? LLONG_MIN : LLONG_MAX; }
    return neg ? (long long)(0 - m) : (long long)m;
}

long __isoc23_strtol(const char *s, char **end, int base) {
    if (!binary_digits(s, base)) return strtol(s, end, base);
    long long v = __isoc23_strtoll(s, end, base);
    if (v > LONG_MAX) { errno = ERANGE; return LONG_MAX; }
    if (v < LONG_MIN) { errno = ERANGE; return LONG_MIN; }
    return (long)v;
}

unsigned long long __isoc23_strtoull(const char *s, char **end, int base) {
    const char *d = binary_digits(s, base);
    if (!d) return strtoull(s, end, base);
    const char *stop;
    int overflow;
    unsigned long long m = binary_value(d, &stop, &overflow);
    if (end) *end = (char *)stop;
    if (overflow) { errno = ERANGE; return ULLONG_MAX; }
    return negative(s) ? 0 - m : m;
}

unsigned long __isoc23_strtoul(const char *s, char **end, int base) {
    if (!binary_digits(s, base)) return strtoul(s, end, base);
    unsigned long long v = __isoc23_strtoull(s, end, base);
    if (v > ULONG_MAX) { errno = ERANGE; return ULONG_MAX; }
    return (unsigned long)v;
}

int __isoc23_sscanf(const char *s, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int n = vsscanf(s, format, args);
    va_end(args);
    return n;
}

int __isoc23_vsscanf(const char *s, const char *format, va_list args) {
    return vsscanf(s, format, args);
}

size_t strlcpy(char *dst, const char *src, size_t size) {
    size_t n = strlen(src);
    if (size) {
        size_t k = n < size - 1 ? n : size - 1;
        memcpy(dst, src, k);
        dst[k] = '\0';
    }
    return n;
}

size_t strlcat(char *dst, const char *src, size_t size) {
    size_t d = strnlen(dst, size);
    if (d == size) return size + strlen(src);
    return d + strlcpy(dst + d, src, size - d);
}
