/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for sha256: FIPS 180-4 vectors, every code path (portable, libcrypto's, AVX-512
 * lanes) against an independent implementation (OpenSSL's), streaming vs one-shot, hex
 * parsing. Comparing our paths only with each other would prove nothing on a CPU that has
 * just one of them. */
#include <criterion/criterion.h>
#include <openssl/sha.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sha256.h"

static void expect_hex(const void *data, size_t n, const char *want)
{
	uint8_t d[32];
	char hex[65];

	sha256(data, n, d);
	sha256_hex(d, hex);
	cr_assert_str_eq(hex, want, "len %zu", n);
}

/* Fixed seed: failures must reproduce. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void fill_random(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(rng() >> 32);
}

/* Run every vector on each path, so a portable-only bug cannot hide behind libcrypto's code
 * on the build host. */
static void fips_vectors(void)
{
	static const char m448[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	static const char m896[] = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
				   "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";

	expect_hex("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	expect_hex("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	expect_hex(m448, strlen(m448),
		   "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	expect_hex(m896, strlen(m896),
		   "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static const char million_a[] =
	"cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";

static void one_million_a(void)
{
	enum { N = 1000000 };
	char *a = malloc(N);

	cr_assert_not_null(a);
	memset(a, 'a', N);
	expect_hex(a, N, million_a);
	free(a);

	/* Same message fed in uneven pieces, crossing block boundaries at varied offsets. */
	struct sha256 s;
	uint8_t d[32];
	char hex[65], chunk[1000];
	size_t left = N, step = 1;

	memset(chunk, 'a', sizeof(chunk));
	sha256_init(&s);
	while (left) {
		size_t k = step < left ? step : left;

		sha256_update(&s, chunk, k);
		left -= k;
		step = step % 961 + 37;  /* 37..997, within chunk */
	}
	sha256_final(&s, d);
	sha256_hex(d, hex);
	cr_assert_str_eq(hex, million_a);
}

Test(sha256, fips_vectors)
{
	fips_vectors();
}

Test(sha256, fips_vectors_portable)
{
	sha256_force_portable(1);
	cr_assert_eq(sha256_accelerated(), 0);
	fips_vectors();
	sha256_force_portable(0);
}

Test(sha256, million_a)
{
	one_million_a();
}

Test(sha256, million_a_portable)
{
	sha256_force_portable(1);
	one_million_a();
	sha256_force_portable(0);
}

Test(sha256, incremental_split_every_offset)
{
	uint8_t buf[1000], want[32], got[32];

	fill_random(buf, sizeof(buf));
	sha256(buf, sizeof(buf), want);
	for (size_t off = 0; off <= 200; off++) {
		struct sha256 s;

		sha256_init(&s);
		sha256_update(&s, buf, off);
		sha256_update(&s, buf + off, sizeof(buf) - off);
		sha256_final(&s, got);
		cr_assert_arr_eq(got, want, 32, "split at %zu", off);

		/* Three pieces: a short head stresses the partial-buffer fill path. */
		size_t mid = off + (sizeof(buf) - off) / 3;

		sha256_init(&s);
		sha256_update(&s, buf, off);
		sha256_update(&s, buf + off, mid - off);
		sha256_update(&s, buf + mid, sizeof(buf) - mid);
		sha256_final(&s, got);
		cr_assert_arr_eq(got, want, 32, "split at %zu and %zu", off, mid);
	}
}

Test(sha256, byte_at_a_time)
{
	uint8_t buf[300], want[32], got[32];
	struct sha256 s;

	fill_random(buf, sizeof(buf));
	sha256(buf, sizeof(buf), want);
	sha256_init(&s);
	for (size_t i = 0; i < sizeof(buf); i++)
		sha256_update(&s, buf + i, 1);
	sha256_final(&s, got);
	cr_assert_arr_eq(got, want, 32);
}

/* Lengths around the 55/56/64-byte padding edges, where a second padding block
 * appears or not. */
Test(sha256, padding_edges_agree_across_paths)
{
	uint8_t buf[200], a[32], b[32];

	fill_random(buf, sizeof(buf));
	for (size_t n = 0; n <= sizeof(buf); n++) {
		sha256_force_portable(1);
		sha256(buf, n, a);
		sha256_force_portable(0);
		sha256(buf, n, b);
		cr_assert_arr_eq(a, b, 32, "len %zu", n);
	}
}

/* The reference: OpenSSL's SHA256(), for one-shot and streamed input and for the lanes. */
Test(sha256, matches_openssl)
{
	enum { MAX = 3 << 20 };
	uint8_t *buf = malloc(MAX);
	cr_assert_not_null(buf);
	fill_random(buf, MAX);
	for (int iter = 0; iter < 200; iter++) {
		size_t n = iter % 8 == 0 ? rng() % MAX : rng() % 5000;
		uint8_t want[32], got[32], streamed[32];
		SHA256(buf, n, want);
		sha256(buf, n, got);
		cr_assert_arr_eq(want, got, 32, "len %zu", n);
		struct sha256 s;
		sha256_init(&s);
		for (size_t off = 0; off < n;) {
			size_t k = rng() % 300000 + 1;
			if (k > n - off)
				k = n - off;
			sha256_update(&s, buf + off, k);
			off += k;
		}
		sha256_final(&s, streamed);
		cr_assert_arr_eq(want, streamed, 32, "streamed, len %zu", n);
	}
	const void *msgs[16];
	uint8_t out[16][32], want[32];
	for (int i = 0; i < 16; i++)
		msgs[i] = buf + (size_t)i * 131072;
	sha256_many(msgs, 16, 1 << 20, out);
	for (int i = 0; i < 16; i++) {
		SHA256(msgs[i], 1 << 20, want);
		cr_assert_arr_eq(want, out[i], 32, "lane %d", i);
	}
	free(buf);
}

Test(sha256, hex_round_trip)
{
	uint8_t d[32], back[32];
	char hex[65];

	sha256("abc", 3, d);
	sha256_hex(d, hex);
	cr_assert_eq(strlen(hex), 64);
	cr_assert_eq(sha256_from_hex(hex, back), 0);
	cr_assert_arr_eq(back, d, 32);

	for (int i = 0; i < 32; i++)
		d[i] = (uint8_t)(i * 8 + 7);
	d[0] = 0x00;
	d[31] = 0xff;
	sha256_hex(d, hex);
	cr_assert_eq(sha256_from_hex(hex, back), 0);
	cr_assert_arr_eq(back, d, 32);

	/* Upper case is accepted so hand-typed digests work. */
	cr_assert_eq(sha256_from_hex("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
				     back), 0);
	sha256("abc", 3, d);
	cr_assert_arr_eq(back, d, 32);
}

Test(sha256, from_hex_rejects_bad_input)
{
	static const char good[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
	uint8_t out[32], sentinel[32];
	char s[80];

	memset(sentinel, 0x5a, sizeof(sentinel));
	memcpy(out, sentinel, sizeof(out));

	cr_assert_eq(sha256_from_hex(NULL, out), -EINVAL);
	cr_assert_eq(sha256_from_hex("", out), -EINVAL);
	/* 63 digits */
	cr_assert_eq(sha256_from_hex(good + 1, out), -EINVAL);
	/* odd length in the middle of a byte */
	memcpy(s, good, 63);
	s[63] = '\0';
	cr_assert_eq(sha256_from_hex(s, out), -EINVAL);
	/* 65 digits */
	snprintf(s, sizeof(s), "%s0", good);
	cr_assert_eq(sha256_from_hex(s, out), -EINVAL);
	/* trailing newline, leading space, 0x prefix */
	snprintf(s, sizeof(s), "%s\n", good);
	cr_assert_eq(sha256_from_hex(s, out), -EINVAL);
	snprintf(s, sizeof(s), " %.63s", good);
	cr_assert_eq(sha256_from_hex(s, out), -EINVAL);
	snprintf(s, sizeof(s), "0x%.62s", good);
	cr_assert_eq(sha256_from_hex(s, out), -EINVAL);
	/* a non-hex character at each position, including ones next to hex letters */
	for (int i = 0; i < 64; i++) {
		static const char bad[] = "gG/:@`-z";

		for (const char *c = bad; *c; c++) {
			memcpy(s, good, sizeof(good));
			s[i] = *c;
			cr_assert_eq(sha256_from_hex(s, out), -EINVAL, "pos %d char %c", i, *c);
		}
	}
	cr_assert_arr_eq(out, sentinel, 32, "out modified on failure");
	cr_assert_eq(sha256_from_hex(good, out), 0);
}

/* ---- against OpenSSL ---------------------------------------------------------------------- */

/* Lengths 0..300 one by one (every padding case, partial blocks on both sides), then random
 * ones up to 64 KiB and, one in ten, up to 2 MiB; odd starting offsets for unaligned loads.
 * (Sized for the sanitizer build too, where our code runs unoptimized.) */
static size_t ref_len(int i, size_t max)
{
	return i <= 300 ? (size_t)i : (size_t)(i % 10 == 0 ? rng() % max : rng() % 65536);
}

static void one_shot_matches_openssl(void)
{
	enum { MAX = 2 << 20, N = 400 };
	uint8_t *buf = malloc(MAX + 1), a[32], want[32];

	cr_assert_not_null(buf);
	fill_random(buf, MAX + 1);
	for (int i = 0; i < N; i++) {
		size_t n = ref_len(i, MAX), start = (size_t)i & 1;

		SHA256(buf + start, n, want);
		sha256(buf + start, n, a);
		cr_assert_arr_eq(a, want, 32, "len %zu start %zu (%s)", n, start,
				 sha256_accelerated() ? "libcrypto" : "portable");
	}
	free(buf);
}

Test(sha256, portable_matches_openssl)
{
	sha256_force_portable(1);
	cr_assert_eq(sha256_accelerated(), 0);
	one_shot_matches_openssl();
	sha256_force_portable(0);
}

Test(sha256, libcrypto_path_matches_openssl)
{
	sha256_force_portable(0);
	cr_assert_eq(sha256_accelerated(), 1);
	one_shot_matches_openssl();
}

/* sha256_many picks its path from the number of messages: 16 lanes from SHA256_MANY_LANES16
 * up, 8 lanes from SHA256_MANY_LANES8, one by one below. Every count 1..33 crosses each
 * path and the batch boundaries (16, 16 + 1, 2 * 16 + 1); 1 MiB messages (the block tree's)
 * only in counts that take each path once, which is where a long message could differ. */
static int many_long_count(size_t n)
{
	return n == 1 || n == SHA256_MANY_LANES8 || n == 8 || n == SHA256_MANY_LANES16 ||
	       n == 16 || n == 17;
}

static void many_matches_openssl(size_t maxlen)
{
	static const size_t lens[] = { 0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 4096, 1 << 20 };
	enum { MAXN = 33 };
	uint8_t *buf = malloc((size_t)(MAXN + 1) << 20);
	const void *msgs[MAXN];
	uint8_t got[MAXN][32], want[32];

	cr_assert_not_null(buf);
	fill_random(buf, (size_t)(MAXN + 1) << 20);
	for (size_t l = 0; l < sizeof lens / sizeof lens[0] && lens[l] <= maxlen; l++) {
		for (size_t n = 1; n <= MAXN; n++) {
			if (lens[l] > 4096 && !many_long_count(n))
				continue;
			for (size_t i = 0; i < n; i++)
				msgs[i] = buf + (i << 20) + i;  /* distinct, unaligned */
			memset(got, 0, sizeof got);
			sha256_many(msgs, n, lens[l], got);
			for (size_t i = 0; i < n; i++) {
				SHA256(msgs[i], lens[l], want);
				cr_assert_arr_eq(got[i], want, 32, "len %zu, %zu messages, lane %zu",
						 lens[l], n, i);
			}
		}
	}
	free(buf);
}

Test(sha256, many_lanes_match_openssl)
{
	if (sha256_many_lanes() == 1)
		cr_skip_test("no AVX-512 on this CPU: sha256_many goes one by one (checked by "
			     "many_portable_matches_openssl)");
	many_matches_openssl(1 << 20);
}

/* The same without lanes (any CPU): the one-by-one fallback. Up to 4 KiB, since the long
 * messages go through what portable_matches_openssl checked. */
Test(sha256, many_portable_matches_openssl)
{
	sha256_force_portable(1);
	cr_assert_eq(sha256_many_lanes(), 1);
	many_matches_openssl(4096);
	sha256_force_portable(0);
}
