/* SPDX-License-Identifier: GPL-2.0-or-later */
/* SHA-256 (FIPS 180-4) for content hashes in manifests and verify. Prefix: sha256_.
 * Uses the x86-64 SHA extensions when the CPU has them, portable C otherwise. */
#ifndef STILL_SHA256_H
#define STILL_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct sha256 {
	uint32_t h[8];
	uint64_t len;             /* bytes fed so far */
	uint8_t buf[64];          /* partial block awaiting more input */
	size_t nbuf;
};

void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *data, size_t n);
/* Leaves *s unusable until the next sha256_init. */
void sha256_final(struct sha256 *s, uint8_t out[32]);
void sha256(const void *data, size_t n, uint8_t out[32]);       /* one shot */
void sha256_hex(const uint8_t d[32], char out[65]);             /* lowercase, NUL-terminated */
int sha256_from_hex(const char *hex, uint8_t out[32]);          /* 0, or -EINVAL if not 64 hex digits */
int sha256_accelerated(void);                                   /* 1 if libcrypto's block function is in use */

/* out[i] = SHA-256 of the len bytes at msgs[i], for n independent messages of one length.
 * Where the CPU has AVX-512, up to 16 of them are hashed together in vector lanes, about twice
 * as fast per byte as one message at a time with SHA-NI; runs of fewer than SHA256_MANY_LANES8
 * go one by one. Honours sha256_force_portable. */
#define SHA256_MANY_LANES16 11
#define SHA256_MANY_LANES8 6
void sha256_many(const void *const *msgs, size_t n, size_t len, uint8_t (*out)[32]);
/* 16 if sha256_many hashes messages together, 1 if one by one. */
int sha256_many_lanes(void);

/* For tests and benchmarks: nonzero routes all hashing (process-wide) through the
 * portable code so it can be checked against, and timed beside, libcrypto's. */
void sha256_force_portable(int on);

#endif
