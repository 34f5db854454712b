/* SPDX-License-Identifier: GPL-2.0-or-later */
/* SHA-256 per FIPS 180-4. One message at a time, the blocks go to libcrypto's block function
 * (OpenSSL picks SHA-NI, AVX2 or SSSE3 code for the CPU at hand: never slower than OpenSSL's own
 * SHA-256); a portable one is kept for tests (sha256_force_portable). Many messages of one length are
 * hashed 16 side by side with AVX-512 (sha256_many). The choice is made once per process;
 * the block functions take a block count so bulk input does not pay a call per 64 bytes. */
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Update: the block function without EVP's cost */
#include "sha256.h"

#include <openssl/sha.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_LANES_IMPL 1
#else
#define HAVE_LANES_IMPL 0
#endif

typedef void (*compress_fn)(uint32_t h[8], const uint8_t *p, size_t nblocks);

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

#if HAVE_LANES_IMPL

/* ---- several messages at once: AVX-512 lanes ----
 *
 * The "sha256-1m" block tree hashes many independent 1 MiB blocks, so they can share the
 * vector unit: one message per 32-bit lane, the same instruction stream for all of them.
 * With AVX-512's rotates and three-input logic a round is about 17 instructions for 16
 * messages, against sha256rnds2's two rounds of one message: on the CPUs measured, 16 lanes
 * run about twice as fast as SHA-NI and 8 lanes (ymm) about 1.4 times. */

/* One round with renamed variables; wk is W[i] + K[i]. */
#define MB_ROUND(a, b, c, d, e, f, g, h, wk) do { \
		VT t1_ = ADD(ADD(h, XOR3(ROR(e, 6), ROR(e, 11), ROR(e, 25))), ADD(VCH(e, f, g), wk)); \
		VT t2_ = ADD(XOR3(ROR(a, 2), ROR(a, 13), ROR(a, 22)), VMAJ(a, b, c)); \
		(d) = ADD(d, t1_); \
		(h) = ADD(t1_, t2_); \
	} while (0)
/* W[i] for i >= 16 over the 16-word window: w[i] += s1(w[i-2]) + w[i-7] + s0(w[i-15]). */
#define MB_W(w, i) ((w)[(i) & 15])
#define MB_SCHED(w, i) \
	(MB_W(w, i) = ADD(ADD(MB_W(w, i), MB_W(w, (i) - 7)), \
		ADD(XOR3(ROR(MB_W(w, (i) - 2), 17), ROR(MB_W(w, (i) - 2), 19), SRL(MB_W(w, (i) - 2), 10)), \
		    XOR3(ROR(MB_W(w, (i) - 15), 7), ROR(MB_W(w, (i) - 15), 18), SRL(MB_W(w, (i) - 15), 3)))))
#define MB_WK(w, i) ADD(MB_W(w, i), SET1(K[i]))
#define MB_R8(w, i) do { \
		MB_ROUND(a, b, c, d, e, f, g, h, MB_WK(w, (i) + 0)); \
		MB_ROUND(h, a, b, c, d, e, f, g, MB_WK(w, (i) + 1)); \
		MB_ROUND(g, h, a, b, c, d, e, f, MB_WK(w, (i) + 2)); \
		MB_ROUND(f, g, h, a, b, c, d, e, MB_WK(w, (i) + 3)); \
		MB_ROUND(e, f, g, h, a, b, c, d, MB_WK(w, (i) + 4)); \
		MB_ROUND(d, e, f, g, h, a, b, c, MB_WK(w, (i) + 5)); \
		MB_ROUND(c, d, e, f, g, h, a, b, MB_WK(w, (i) + 6)); \
		MB_ROUND(b, c, d, e, f, g, h, a, MB_WK(w, (i) + 7)); \
	} while (0)
#define MB_S8(w, i) do { \
		MB_SCHED(w, (i) + 0); MB_SCHED(w, (i) + 1); MB_SCHED(w, (i) + 2); \
		MB_SCHED(w, (i) + 3); MB_SCHED(w, (i) + 4); MB_SCHED(w, (i) + 5); \
		MB_SCHED(w, (i) + 6); MB_SCHED(w, (i) + 7); \
	} while (0)
/* 64 rounds of one block in every lane, w[] holding its 16 words; adds into s[]. */
#define MB_BLOCK(w) do { \
		VT a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7]; \
		MB_R8(w, 0); \
		MB_R8(w, 8); \
		for (int i_ = 16; i_ < 64; i_ += 16) { \
			MB_S8(w, i_); \
			MB_R8(w, i_); \
			MB_S8(w, i_ + 8); \
			MB_R8(w, i_ + 8); \
		} \
		s[0] = ADD(s[0], a); s[1] = ADD(s[1], b); s[2] = ADD(s[2], c); s[3] = ADD(s[3], d); \
		s[4] = ADD(s[4], e); s[5] = ADD(s[5], f); s[6] = ADD(s[6], g); s[7] = ADD(s[7], h); \
	} while (0)

#define VT __m512i
#define ADD(x, y) _mm512_add_epi32(x, y)
#define ROR(x, n) _mm512_ror_epi32(x, n)
#define SRL(x, n) _mm512_srli_epi32(x, n)
#define XOR3(x, y, z) _mm512_ternarylogic_epi32(x, y, z, 0x96)
#define VCH(x, y, z) _mm512_ternarylogic_epi32(x, y, z, 0xca)
#define VMAJ(x, y, z) _mm512_ternarylogic_epi32(x, y, z, 0xe8)
#define SET1(k) _mm512_set1_epi32((int)(k))

/* 16 messages: st[j][lane] is word j of lane's state; nblocks 64-byte blocks from each p[]. */
__attribute__((target("avx512f,avx512bw")))
static void compress_x16(uint32_t st[8][16], const uint8_t *const p[16], size_t nblocks)
{
	const __m512i bswap = _mm512_broadcast_i32x4(_mm_set_epi64x(0x0c0d0e0f08090a0bLL,
								    0x0405060700010203LL));
	VT s[8];

	for (int i = 0; i < 8; i++)
		s[i] = _mm512_loadu_si512(st[i]);
	for (size_t off = 0; off < nblocks * 64; off += 64) {
		VT r[16], t[16], w[16];

		/* r[i]: lane i's 16 words; transpose so that w[j] holds word j of every lane. */
		for (int i = 0; i < 16; i++)
			r[i] = _mm512_shuffle_epi8(_mm512_loadu_si512(p[i] + off), bswap);
		for (int i = 0; i < 16; i += 2) {
			t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
			t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
		}
		for (int g = 0; g < 16; g += 4) {
			r[g + 0] = _mm512_unpacklo_epi64(t[g], t[g + 2]);
			r[g + 1] = _mm512_unpackhi_epi64(t[g], t[g + 2]);
			r[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]);
			r[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);
		}
		/* r[4g+k], 128-bit lane L: word 4L+k of lanes 4g..4g+3. */
		for (int k = 0; k < 4; k++) {
			VT v0 = _mm512_shuffle_i32x4(r[k], r[4 + k], 0x44);
			VT v1 = _mm512_shuffle_i32x4(r[k], r[4 + k], 0xee);
			VT v2 = _mm512_shuffle_i32x4(r[8 + k], r[12 + k], 0x44);
			VT v3 = _mm512_shuffle_i32x4(r[8 + k], r[12 + k], 0xee);

			w[k] = _mm512_shuffle_i32x4(v0, v2, 0x88);
			w[4 + k] = _mm512_shuffle_i32x4(v0, v2, 0xdd);
			w[8 + k] = _mm512_shuffle_i32x4(v1, v3, 0x88);
			w[12 + k] = _mm512_shuffle_i32x4(v1, v3, 0xdd);
		}
		MB_BLOCK(w);
	}
	for (int i = 0; i < 8; i++)
		_mm512_storeu_si512(st[i], s[i]);
}

#undef VT
#undef ADD
#undef ROR
#undef SRL
#undef XOR3
#undef VCH
#undef VMAJ
#undef SET1

#define VT __m256i
#define ADD(x, y) _mm256_add_epi32(x, y)
#define ROR(x, n) _mm256_ror_epi32(x, n)
#define SRL(x, n) _mm256_srli_epi32(x, n)
#define XOR3(x, y, z) _mm256_ternarylogic_epi32(x, y, z, 0x96)
#define VCH(x, y, z) _mm256_ternarylogic_epi32(x, y, z, 0xca)
#define VMAJ(x, y, z) _mm256_ternarylogic_epi32(x, y, z, 0xe8)
#define SET1(k) _mm256_set1_epi32((int)(k))

/* 8 messages in ymm registers (AVX-512VL for the rotates and ternary logic). */
__attribute__((target("avx2,avx512f,avx512vl")))
static void compress_x8(uint32_t st[8][16], const uint8_t *const p[16], size_t nblocks)
{
	const __m256i bswap = _mm256_broadcastsi128_si256(_mm_set_epi64x(0x0c0d0e0f08090a0bLL,
									0x0405060700010203LL));
	VT s[8];

	for (int i = 0; i < 8; i++)
		s[i] = _mm256_loadu_si256((const __m256i *)st[i]);
	for (size_t off = 0; off < nblocks * 64; off += 64) {
		VT w[16];

		for (int half = 0; half < 2; half++) {
			VT r[8], t[8];

			for (int i = 0; i < 8; i++)
				r[i] = _mm256_shuffle_epi8(_mm256_loadu_si256(
					(const __m256i *)(p[i] + off + 32 * half)), bswap);
			for (int i = 0; i < 8; i += 2) {
				t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
				t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
			}
			for (int g = 0; g < 8; g += 4) {
				r[g + 0] = _mm256_unpacklo_epi64(t[g], t[g + 2]);
				r[g + 1] = _mm256_unpackhi_epi64(t[g], t[g + 2]);
				r[g + 2] = _mm256_unpacklo_epi64(t[g + 1], t[g + 3]);
				r[g + 3] = _mm256_unpackhi_epi64(t[g + 1], t[g + 3]);
			}
			for (int k = 0; k < 4; k++) {
				w[8 * half + k] = _mm256_permute2x128_si256(r[k], r[4 + k], 0x20);
				w[8 * half + 4 + k] = _mm256_permute2x128_si256(r[k], r[4 + k], 0x31);
			}
		}
		MB_BLOCK(w);
	}
	for (int i = 0; i < 8; i++)
		_mm256_storeu_si256((__m256i *)st[i], s[i]);
}

#undef VT
#undef ADD
#undef ROR
#undef SRL
#undef XOR3
#undef VCH
#undef VMAJ
#undef SET1

static int cpu_has_avx512_lanes(void)
{
	unsigned a, b, c, d;

	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE))
		return 0;
	/* The OS must save the opmask and all 512 bits of the 32 vector registers. */
	unsigned lo, hi;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	if ((lo & 0xe6) != 0xe6)
		return 0;
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
		return 0;
	return (b & bit_AVX2) && (b & bit_AVX512F) && (b & bit_AVX512BW) && (b & bit_AVX512VL);
}

#endif /* HAVE_LANES_IMPL */

/* ---- dispatch ---- */

static compress_fn best_compress = compress_portable;
static pthread_once_t best_once = PTHREAD_ONCE_INIT;
static atomic_int force_portable;

typedef void (*lanes_fn)(uint32_t st[8][16], const uint8_t *const p[16], size_t nblocks);
static lanes_fn lanes16, lanes8;  /* NULL without AVX-512 */

/* libcrypto's block function: SHA256_Update on a context holding our state and no buffered
 * input runs it over whole blocks straight from p. */
static void compress_libcrypto(uint32_t h[8], const uint8_t *p, size_t nblocks)
{
	SHA256_CTX c;
	memset(&c, 0, sizeof c);
	for (int i = 0; i < 8; i++)
		c.h[i] = h[i];
	c.md_len = SHA256_DIGEST_LENGTH;
	SHA256_Update(&c, p, nblocks * 64);
	for (int i = 0; i < 8; i++)
		h[i] = c.h[i];
}

static void pick_compress(void)
{
	best_compress = compress_libcrypto;
#if HAVE_LANES_IMPL
	if (cpu_has_avx512_lanes()) {
		lanes16 = compress_x16;
		lanes8 = compress_x8;
	}
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

/* ---- several messages of one length ---- */

/* Hash k <= 16 messages of len bytes each in the lanes of fn; unused lanes repeat msgs[0]. */
static void sha256_lanes(lanes_fn fn, const uint8_t *const *msgs, size_t k, size_t len,
			 uint8_t (*out)[32])
{
	uint32_t st[8][16] __attribute__((aligned(64)));
	const uint8_t *p[16];
	/* The last partial block and the padding: one or two blocks per lane. */
	uint8_t tail[16][128];
	size_t rem = len % 64, full = len / 64, tblocks = rem + 9 > 64 ? 2 : 1;
	uint64_t bits = (uint64_t)len << 3;

	for (size_t i = 0; i < 16; i++) {
		p[i] = msgs[i < k ? i : 0];
		for (int j = 0; j < 8; j++)
			st[j][i] = H0[j];
	}
	fn(st, p, full);
	for (size_t i = 0; i < k; i++) {
		uint8_t *t = tail[i];

		memcpy(t, p[i] + full * 64, rem);
		t[rem] = 0x80;
		memset(t + rem + 1, 0, tblocks * 64 - rem - 1 - 8);
		store_be32(t + tblocks * 64 - 8, (uint32_t)(bits >> 32));
		store_be32(t + tblocks * 64 - 4, (uint32_t)bits);
		p[i] = t;
	}
	for (size_t i = k; i < 16; i++)
		p[i] = tail[0];
	fn(st, p, tblocks);
	for (size_t i = 0; i < k; i++)
		for (int j = 0; j < 8; j++)
			store_be32(out[i] + 4 * j, st[j][i]);
}

void sha256_many(const void *const *msgs, size_t n, size_t len, uint8_t (*out)[32])
{
	const uint8_t *const *m = (const uint8_t *const *)msgs;

	if (get_compress() == compress_portable || !lanes16) {
		for (size_t i = 0; i < n; i++)
			sha256(m[i], len, out[i]);
		return;
	}
	while (n > 0) {
		/* Measured break-even points: SHA-NI costs about a ninth of a 16-lane pass per
		 * message, an 8-lane pass about 0.7 of one. */
		if (n >= SHA256_MANY_LANES16) {
			size_t k = n < 16 ? n : 16;

			sha256_lanes(lanes16, m, k, len, out);
			m += k, out += k, n -= k;
		} else if (n >= SHA256_MANY_LANES8) {
			size_t k = n < 8 ? n : 8;

			sha256_lanes(lanes8, m, k, len, out);
			m += k, out += k, n -= k;
		} else {
			sha256(m[0], len, out[0]);
			m++, out++, n--;
		}
	}
}

int sha256_many_lanes(void)
{
	if (get_compress() == compress_portable || !lanes16)
		return 1;
	return 16;
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
