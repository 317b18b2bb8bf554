#ifndef EDGE_ED25519_H
#define EDGE_ED25519_H

/* Ed25519 (RFC 8032) from the system's OpenSSL libcrypto, opened at run time (dlopen):
 * libcrypto.so.3 (Debian 12 and 13, Ubuntu 22.04 and 24.04) or libcrypto.so.1.1 (Debian 11,
 * Ubuntu 20.04). systemd needs libcrypto on every one of them, so a board has it; nothing of
 * OpenSSL is needed at build time and the binary carries no copy of it. Keys are the raw 32
 * bytes of RFC 8032 (the private one is its 32-byte seed), signatures 64 bytes. */

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when the signature of `message` verifies under `public_key`, 0 when it does not, -1 when
 * no usable libcrypto could be loaded (edge_ed25519_library_error() says why). */
int edge_ed25519_verify(const uint8_t public_key[32], const uint8_t *message, size_t length, const uint8_t signature[64]);

/* Signs `message` with the private key (its seed): 0, or -1 (no libcrypto, or it failed). */
int edge_ed25519_sign(const uint8_t seed[32], const uint8_t *message, size_t length, uint8_t signature[64]);

/* The public key of a private one: 0, or -1. */
int edge_ed25519_public_key(const uint8_t seed[32], uint8_t public_key[32]);

/* "OpenSSL 3.0.17 1 Jul 2025" (the library's own words), or "" when none was loaded. */
const char *edge_ed25519_library_version(void);

/* Why no libcrypto could be loaded, with the package to install; "" when one was. */
const char *edge_ed25519_library_error(void);

#ifdef __cplusplus
}
#endif

#endif
