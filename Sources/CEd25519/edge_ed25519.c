#include "edge_ed25519.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* Only the EVP calls Ed25519 needs, all in OpenSSL 1.1.1 and 3.x with the same signatures
 * (their ABI is frozen per soname). EVP_PKEY_ED25519 is NID_ED25519, 1087 in both. */
enum { NID_ED25519 = 1087 };

typedef struct evp_pkey EVP_PKEY;
typedef struct evp_md_ctx EVP_MD_CTX;
typedef struct evp_pkey_ctx EVP_PKEY_CTX;

static struct {
    void *handle;
    char error[256];
    EVP_PKEY *(*new_raw_public_key)(int, void *, const unsigned char *, size_t);
    EVP_PKEY *(*new_raw_private_key)(int, void *, const unsigned char *, size_t);
    int (*get_raw_public_key)(const EVP_PKEY *, unsigned char *, size_t *);
    void (*pkey_free)(EVP_PKEY *);
    EVP_MD_CTX *(*md_ctx_new)(void);
    void (*md_ctx_free)(EVP_MD_CTX *);
    int (*verify_init)(EVP_MD_CTX *, EVP_PKEY_CTX **, const void *, void *, EVP_PKEY *);
    int (*verify)(EVP_MD_CTX *, const unsigned char *, size_t, const unsigned char *, size_t);
    int (*sign_init)(EVP_MD_CTX *, EVP_PKEY_CTX **, const void *, void *, EVP_PKEY *);
    int (*sign)(EVP_MD_CTX *, unsigned char *, size_t *, const unsigned char *, size_t);
    const char *(*version)(int);
} lib;

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

static void load(void) {
    const char *const sonames[] = {"libcrypto.so.3", "libcrypto.so.1.1"};
    const char *const names[] = {
        "EVP_PKEY_new_raw_public_key", "EVP_PKEY_new_raw_private_key", "EVP_PKEY_get_raw_public_key",
        "EVP_PKEY_free", "EVP_MD_CTX_new", "EVP_MD_CTX_free", "EVP_DigestVerifyInit", "EVP_DigestVerify",
        "EVP_DigestSignInit", "EVP_DigestSign", "OpenSSL_version",
    };
    void **slots[] = {
        (void **)&lib.new_raw_public_key, (void **)&lib.new_raw_private_key, (void **)&lib.get_raw_public_key,
        (void **)&lib.pkey_free, (void **)&lib.md_ctx_new, (void **)&lib.md_ctx_free, (void **)&lib.verify_init,
        (void **)&lib.verify, (void **)&lib.sign_init, (void **)&lib.sign, (void **)&lib.version,
    };
    const size_t count = sizeof names / sizeof names[0];
    snprintf(lib.error, sizeof lib.error,
             "no OpenSSL libcrypto (libcrypto.so.3 or libcrypto.so.1.1) found for Ed25519: install libssl3 "
             "(libssl3t64 on Debian 13 and Ubuntu 24.04; libssl1.1 on Debian 11)");
    for (size_t s = 0; s < sizeof sonames / sizeof sonames[0]; s++) {
        void *h = dlopen(sonames[s], RTLD_NOW | RTLD_LOCAL);
        if (!h) continue;
        size_t i = 0;
        for (; i < count; i++) {
            *slots[i] = dlsym(h, names[i]);
            if (!*slots[i]) break;
        }
        if (i == count) {
            lib.handle = h;
            lib.error[0] = 0;
            return;
        }
        snprintf(lib.error, sizeof lib.error, "%s lacks %s (Ed25519 needs OpenSSL 1.1.1 or newer)", sonames[s], names[i]);
        for (size_t j = 0; j < count; j++) *slots[j] = NULL;
        dlclose(h);
    }
}

static int ready(void) {
    pthread_once(&lib_once, load);
    return lib.handle != NULL;
}

int edge_ed25519_verify(const uint8_t public_key[32], const uint8_t *message, size_t length, const uint8_t signature[64]) {
    if (!ready()) return -1;
    EVP_PKEY *key = lib.new_raw_public_key(NID_ED25519, NULL, public_key, 32);
    if (!key) return 0; /* not a point of the curve: nothing verifies under it */
    EVP_MD_CTX *ctx = lib.md_ctx_new();
    int ok = 0;
    if (ctx && lib.verify_init(ctx, NULL, NULL, NULL, key) == 1)
        ok = lib.verify(ctx, signature, 64, message, length) == 1;
    lib.md_ctx_free(ctx);
    lib.pkey_free(key);
    return ok;
}

int edge_ed25519_sign(const uint8_t seed[32], const uint8_t *message, size_t length, uint8_t signature[64]) {
    if (!ready()) return -1;
    EVP_PKEY *key = lib.new_raw_private_key(NID_ED25519, NULL, seed, 32);
    if (!key) return -1;
    EVP_MD_CTX *ctx = lib.md_ctx_new();
    size_t size = 64;
    int ok = ctx && lib.sign_init(ctx, NULL, NULL, NULL, key) == 1 && lib.sign(ctx, signature, &size, message, length) == 1 && size == 64;
    lib.md_ctx_free(ctx);
    lib.pkey_free(key);
    return ok ? 0 : -1;
}

int edge_ed25519_public_key(const uint8_t seed[32], uint8_t public_key[32]) {
    if (!ready()) return -1;
    EVP_PKEY *key = lib.new_raw_private_key(NID_ED25519, NULL, seed, 32);
    if (!key) return -1;
    size_t size = 32;
    int ok = lib.get_raw_public_key(key, public_key, &size) == 1 && size == 32;
    lib.pkey_free(key);
    return ok ? 0 : -1;
}

const char *edge_ed25519_library_version(void) {
    return ready() ? lib.version(0) : "";
}

const char *edge_ed25519_library_error(void) {
    ready();
    return lib.error;
}
