/* SHA-256 per FIPS 180-4, with a portable block function and one using the Intel
 * SHA extensions. The choice is made once per process; both functions take a block
 * count so bulk input does not pay a call and dispatch per 64 bytes. */
#include "sha256.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_SHANI_IMPL 1
#else
#define HAVE_SHANI_IMPL 0
#endif

typedef void (*compress_fn)(uint32_t h[8], const uint8_t *p, size_t nblocks);

/* 16-byte aligned so the SHA-NI path may read groups of four as vectors. */
static const uint32_t K[64] __attribute__((aligned(16))) = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static const uint32_t H0[8] = {
	0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

/* Byte-wise so it is alignment- and endian-agnostic; compilers fold it into a
 * single load plus bswap. */
static inline uint32_t load_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static inline void store_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline uint32_t ror32(uint32_t x, unsigned n)
{
	return x >> n | x << (32 - n);
}

/* ---- portable ---- */

#define BSIG0(x) (ror32(x, 2) ^ ror32(x, 13) ^ ror32(x, 22))
#define BSIG1(x) (ror32(x, 6) ^ ror32(x, 11) ^ ror32(x, 25))
#define SSIG0(x) (ror32(x, 7) ^ ror32(x, 18) ^ ((x) >> 3))
#define SSIG1(x) (ror32(x, 17) ^ ror32(x, 19) ^ ((x) >> 10))
/* Ch and Maj in forms with one fewer operation than the FIPS text. */
#define CH(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define MAJ(x, y, z) (((x) & (y)) | ((z) & ((x) | (y))))

/* Renaming the working variables between rounds, instead of shifting eight values
 * each round, leaves only d and h to update. */
#define ROUND(a, b, c, d, e, f, g, h, i) do { \
		uint32_t t1_ = (h) + BSIG1(e) + CH(e, f, g) + K[i] + w[(i) & 15]; \
		uint32_t t2_ = BSIG0(a) + MAJ(a, b, c); \
		(d) += t1_; \
		(h) = t1_ + t2_; \
	} while (0)

static void compress_portable(uint32_t h[8], const uint8_t *p, size_t nblocks)
{
	uint32_t w[16];  /* the schedule only ever looks 16 words back */

	for (; nblocks; nblocks--, p += 64) {
		uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
		uint32_t e = h[4], f = h[5], g = h[6], hh = h[7];

		for (int i = 0; i < 16; i++)
			w[i] = load_be32(p + 4 * i);
		for (int i = 0; i < 64; i += 8) {
			if (i >= 16) {
				for (int j = i; j < i + 8; j++)
					w[j & 15] += SSIG1(w[(j - 2) & 15]) + w[(j - 7) & 15] +
						     SSIG0(w[(j - 15) & 15]);
			}
			ROUND(a, b, c, d, e, f, g, hh, i + 0);
			ROUND(hh, a, b, c, d, e, f, g, i + 1);
			ROUND(g, hh, a, b, c, d, e, f, i + 2);
			ROUND(f, g, hh, a, b, c, d, e, i + 3);
			ROUND(e, f, g, hh, a, b, c, d, i + 4);
			ROUND(d, e, f, g, hh, a, b, c, i + 5);
			ROUND(c, d, e, f, g, hh, a, b, i + 6);
			ROUND(b, c, d, e, f, g, hh, a, i + 7);
		}
		h[0] += a; h[1] += b; h[2] += c; h[3] += d;
		h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
	}
}

/* ---- x86-64 SHA extensions ---- */

#if HAVE_SHANI_IMPL

/* sha256rnds2 keeps the state as two vectors, {A,B,E,F} and {C,D,G,H} (A in the top
 * lane), and consumes W+K for two rounds from the low 64 bits of its third operand. */

/* Four rounds. After two rounds the old {A,B,E,F} is exactly the new {C,D,G,H}, so
 * each rnds2 writes the new ABEF over the stale CDGH and the variables trade roles;
 * two of them put every value back in its own variable without any moves. */
#define SHANI_4ROUNDS(msg, i) do { \
		__m128i wk_ = _mm_add_epi32((msg), _mm_load_si128((const __m128i *)&K[i])); \
		cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk_); \
		wk_ = _mm_shuffle_epi32(wk_, 0x0e); \
		abef = _mm_sha256rnds2_epu32(abef, cdgh, wk_); \
	} while (0)

/* m0..m3 hold W[t-16..t-1]; overwrite m0 with W[t..t+3]. msg1 supplies
 * W[t-16]+s0(W[t-15]), alignr supplies the W[t-7] terms, msg2 adds s1(W[t-2]) and
 * resolves the dependence of W[t+2], W[t+3] on W[t], W[t+1]. */
#define SHANI_SCHED(m0, m1, m2, m3) \
	((m0) = _mm_sha256msg2_epu32(_mm_add_epi32(_mm_sha256msg1_epu32((m0), (m1)), \
						    _mm_alignr_epi8((m3), (m2), 4)), (m3)))

__attribute__((target("sha,sse4.1")))
static void compress_shani(uint32_t h[8], const uint8_t *p, size_t nblocks)
{
	/* Big-endian words in memory; byte-swap each 32-bit lane. */
	const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
	__m128i abcd = _mm_loadu_si128((const __m128i *)&h[0]);
	__m128i efgh = _mm_loadu_si128((const __m128i *)&h[4]);
	__m128i abef, cdgh, t;

	/* Lanes (low..high) A B C D / E F G H  ->  F E B A / H G D C. */
	t = _mm_shuffle_epi32(abcd, 0xb1);
	efgh = _mm_shuffle_epi32(efgh, 0x1b);
	abef = _mm_alignr_epi8(t, efgh, 8);
	cdgh = _mm_blend_epi16(efgh, t, 0xf0);

	for (; nblocks; nblocks--, p += 64) {
		const __m128i abef_in = abef, cdgh_in = cdgh;
		__m128i m0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 0)), bswap);
		__m128i m1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16)), bswap);
		__m128i m2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 32)), bswap);
		__m128i m3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 48)), bswap);

		SHANI_4ROUNDS(m0, 0);
		SHANI_4ROUNDS(m1, 4);
		SHANI_4ROUNDS(m2, 8);
		SHANI_4ROUNDS(m3, 12);
		for (int i = 16; i < 64; i += 16) {
			SHANI_SCHED(m0, m1, m2, m3);
			SHANI_4ROUNDS(m0, i);
			SHANI_SCHED(m1, m2, m3, m0);
			SHANI_4ROUNDS(m1, i + 4);
			SHANI_SCHED(m2, m3, m0, m1);
			SHANI_4ROUNDS(m2, i + 8);
			SHANI_SCHED(m3, m0, m1, m2);
			SHANI_4ROUNDS(m3, i + 12);
		}
		abef = _mm_add_epi32(abef, abef_in);
		cdgh = _mm_add_epi32(cdgh, cdgh_in);
	}

	/* Back to A B C D / E F G H. */
	t = _mm_shuffle_epi32(abef, 0x1b);
	cdgh = _mm_shuffle_epi32(cdgh, 0xb1);
	abcd = _mm_blend_epi16(t, cdgh, 0xf0);
	efgh = _mm_alignr_epi8(cdgh, t, 8);
	_mm_storeu_si128((__m128i *)&h[0], abcd);
	_mm_storeu_si128((__m128i *)&h[4], efgh);
}

static int cpu_has_shani(void)
{
	unsigned a, b, c, d;

	/* cpuid rather than __builtin_cpu_supports: clang 14 does not know "sha". */
	if (!__get_cpuid(1, &a, &b, &c, &d))
		return 0;
	if (!(c & bit_SSSE3) || !(c & bit_SSE4_1))
		return 0;
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
		return 0;
	return (b & bit_SHA) != 0;
}

#endif /* HAVE_SHANI_IMPL */

/* ---- dispatch ---- */

static compress_fn best_compress = compress_portable;
static pthread_once_t best_once = PTHREAD_ONCE_INIT;
static atomic_int force_portable;

static void pick_compress(void)
{
#if HAVE_SHANI_IMPL
	if (cpu_has_shani())
		best_compress = compress_shani;
#endif
}

static compress_fn get_compress(void)
{
	if (atomic_load_explicit(&force_portable, memory_order_relaxed))
		return compress_portable;
	/* pthread_once orders the write of best_compress before our read of it. */
	pthread_once(&best_once, pick_compress);
	return best_compress;
}

void sha256_force_portable(int on)
{
	atomic_store_explicit(&force_portable, on != 0, memory_order_relaxed);
}

int sha256_accelerated(void)
{
	return get_compress() != compress_portable;
}

/* ---- streaming interface ---- */

void sha256_init(struct sha256 *s)
{
	memcpy(s->h, H0, sizeof(s->h));
	s->len = 0;
	s->nbuf = 0;
}

void sha256_update(struct sha256 *s, const void *data, size_t n)
{
	const uint8_t *p = data;
	compress_fn fn;

	if (n == 0)
		return;
	fn = get_compress();
	s->len += n;
	if (s->nbuf) {
		size_t take = 64 - s->nbuf;

		if (take > n)
			take = n;
		memcpy(s->buf + s->nbuf, p, take);
		s->nbuf += take;
		p += take;
		n -= take;
		if (s->nbuf < 64)
			return;
		fn(s->h, s->buf, 1);
		s->nbuf = 0;
	}
	/* Whole blocks straight from the caller's buffer: no copy, one call. */
	if (n >= 64) {
		size_t nblocks = n / 64;

		fn(s->h, p, nblocks);
		p += nblocks * 64;
		n -= nblocks * 64;
	}
	if (n) {
		memcpy(s->buf, p, n);
		s->nbuf = n;
	}
}

void sha256_final(struct sha256 *s, uint8_t out[32])
{
	compress_fn fn = get_compress();
	/* FIPS 180-4 appends the length in bits, modulo 2^64. */
	uint64_t bits = s->len << 3;

	s->buf[s->nbuf++] = 0x80;
	if (s->nbuf > 56) {
		memset(s->buf + s->nbuf, 0, 64 - s->nbuf);
		fn(s->h, s->buf, 1);
		s->nbuf = 0;
	}
	memset(s->buf + s->nbuf, 0, 56 - s->nbuf);
	store_be32(s->buf + 56, (uint32_t)(bits >> 32));
	store_be32(s->buf + 60, (uint32_t)bits);
	fn(s->h, s->buf, 1);
	for (int i = 0; i < 8; i++)
		store_be32(out + 4 * i, s->h[i]);
	s->nbuf = 0;
}

void sha256(const void *data, size_t n, uint8_t out[32])
{
	struct sha256 s;

	sha256_init(&s);
	sha256_update(&s, data, n);
	sha256_final(&s, out);
}

/* ---- hex ---- */

void sha256_hex(const uint8_t d[32], char out[65])
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 0; i < 32; i++) {
		out[2 * i] = digits[d[i] >> 4];
		out[2 * i + 1] = digits[d[i] & 15];
	}
	out[64] = '\0';
}

/* Not isxdigit(): that depends on the locale, and manifests must parse the same
 * everywhere. */
static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int sha256_from_hex(const char *hex, uint8_t out[32])
{
	uint8_t d[32];

	if (!hex)
		return -EINVAL;
	for (int i = 0; i < 32; i++) {
		/* hi checked first so a short string stops at its NUL, never reading past it. */
		int hi = hexval(hex[2 * i]);
		int lo = hi < 0 ? -1 : hexval(hex[2 * i + 1]);

		if (lo < 0)
			return -EINVAL;
		d[i] = (uint8_t)(hi << 4 | lo);
	}
	if (hex[64] != '\0')
		return -EINVAL;
	/* out is untouched on failure. */
	memcpy(out, d, sizeof(d));
	return 0;
}
