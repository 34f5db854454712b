/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Consistency check of a persisted HNSW segment (chroma's hnswlib fork), see hnsw.h.
 *
 * What the format guarantees, and so what a copy from one persist must satisfy:
 * - header.bin is 100 packed native-endian fields; sizes derive from M, maxM0 and the vector
 *   size, and a persist rewrites it first, always.
 * - data_level0.bin is a table of fixed-size slots indexed by internal id (link word, maxM0
 *   neighbour ids, vector, 8-byte label). It is created at max_elements slots and only ever
 *   written slot-wise, so it holds at least cur_element_count slots; a new element always gets
 *   at least one level-0 link once there is a second element, and its neighbours gain links
 *   back to it, so an older header sees links to ids it does not know, a newer header sees
 *   empty slots.
 * - length.bin holds one float per slot; only its size says anything.
 * - link_lists.bin is, for every element in id order, a u32 byte count and that many bytes of
 *   upper-level lists (level = count / (4 + 4 * maxM)). Levels never change and the file is
 *   only extended, so its size is exactly the sum for cur_element_count elements.
 * - index_metadata.pickle (chroma's PersistentData) is rewritten last; chroma gives every
 *   added record a fresh label (1, 2, ...) and never reuses an internal id, so its
 *   total_elements_added equals cur_element_count and labels are unique in 1..that. */
#include "hnsw.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const hv_file_names[HV_NFILES] = {
	"header.bin", "data_level0.bin", "length.bin", "link_lists.bin", "index_metadata.pickle",
};

#define HV_HEADER_SIZE 100
#define HV_VERSION 1
#define HV_DELETE_MARK 0x01u
#define HV_MAX_LEVEL 200      /* levels are -ln(U)/ln(M): anything near this is garbage */
#define HV_READ_CHUNK (1u << 20)
#define HV_PICKLE_HEAD 65536  /* chroma's counters sit in the pickle's first frame */

struct hv_header {
	int32_t version;
	uint64_t offset_level0, max_elements, count, size_per_element, label_offset, offset_data;
	int32_t maxlevel;
	uint32_t enterpoint;
	uint64_t max_m, max_m0, m;
	double mult;
	uint64_t ef_construction;
};

/* What the check learnt from the pickle; has_* is 0 when a field was absent or unparsable. */
struct hv_pickle {
	int present, has_total, has_dim;
	uint64_t total, dim;
};

struct hv_ctx {
	int fd[HV_NFILES];
	off_t size[HV_NFILES];
	struct hv_header h;
	uint64_t links_upper;  /* bytes of one upper-level list: count word + maxM ids */
	uint64_t dim;
	uint8_t *levels;       /* level of each element, from link_lists.bin */
	char *why;
	size_t whylen;
};

static int torn(struct hv_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int torn(struct hv_ctx *c, const char *fmt, ...)
{
	va_list ap;

	if (c->why && c->whylen) {
		va_start(ap, fmt);
		vsnprintf(c->why, c->whylen, fmt, ap);
		va_end(ap);
	}
	return 1;
}

static int hv_pread(int fd, void *p, size_t n, off_t off)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = pread(fd, (uint8_t *)p + done, n - done, off + (off_t)done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		done += (size_t)r;
	}
	return done == n ? 0 : -ENODATA;
}

/* A forward-only buffered reader, so link_lists.bin costs one pass of large reads. */
struct hv_rd {
	int fd;
	off_t base;          /* file offset of buf[0] */
	size_t have, at;
	uint8_t *buf;
};

static int rd_get(struct hv_rd *r, void *dst, size_t n)
{
	uint8_t *d = dst;

	while (n) {
		if (r->at == r->have) {
			ssize_t got;
			r->base += (off_t)r->have;
			r->have = r->at = 0;
			do
				got = pread(r->fd, r->buf, HV_READ_CHUNK, r->base);
			while (got < 0 && errno == EINTR);
			if (got < 0)
				return -errno;
			if (got == 0)
				return -ENODATA;
			r->have = (size_t)got;
		}
		size_t k = r->have - r->at < n ? r->have - r->at : n;
		memcpy(d, r->buf + r->at, k);
		r->at += k, d += k, n -= k;
	}
	return 0;
}

static void rd_skip(struct hv_rd *r, uint64_t n)
{
	if (n <= r->have - r->at) {
		r->at += n;
		return;
	}
	r->base += (off_t)(r->at + n);
	r->have = r->at = 0;
}

static off_t rd_pos(const struct hv_rd *r)
{
	return r->base + (off_t)r->at;
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof v);
	return v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof v);
	return v;
}

static int read_header(struct hv_ctx *c)
{
	uint8_t b[HV_HEADER_SIZE];
	struct hv_header *h = &c->h;
	int rc;

	if (c->size[HV_HEADER] != HV_HEADER_SIZE)
		return torn(c, "header.bin is %lld bytes, not %d", (long long)c->size[HV_HEADER],
			    HV_HEADER_SIZE);
	rc = hv_pread(c->fd[HV_HEADER], b, sizeof b, 0);
	if (rc == -ENODATA)
		return torn(c, "header.bin shrank while read");
	if (rc < 0)
		return rc;
	h->version = (int32_t)get32(b);
	h->offset_level0 = get64(b + 4);
	h->max_elements = get64(b + 12);
	h->count = get64(b + 20);
	h->size_per_element = get64(b + 28);
	h->label_offset = get64(b + 36);
	h->offset_data = get64(b + 44);
	h->maxlevel = (int32_t)get32(b + 52);
	h->enterpoint = get32(b + 56);
	h->max_m = get64(b + 60);
	h->max_m0 = get64(b + 68);
	h->m = get64(b + 76);
	memcpy(&h->mult, b + 84, sizeof h->mult);
	h->ef_construction = get64(b + 92);
	return 0;
}

/* The header's layout fields against each other: all are functions of M, maxM0 and the
 * vector size, and no persist changes them, so a header that fails this is no hnswlib header
 * (or garbage), not one caught mid-persist. */
static int check_layout(struct hv_ctx *c)
{
	const struct hv_header *h = &c->h;

	if (h->version != HV_VERSION)
		return torn(c, "header.bin has persistence version %d, not %d", h->version, HV_VERSION);
	/* The link count is 16 bits (the next byte holds the delete mark). */
	if (h->offset_level0 != 0 || h->m < 2 || h->max_m < 1 || h->max_m0 < h->max_m ||
	    h->max_m0 > 0xffff || h->max_m > 0xffff)
		return torn(c, "header.bin has an impossible graph shape (M %llu, maxM %llu, maxM0 %llu)",
			    (unsigned long long)h->m, (unsigned long long)h->max_m,
			    (unsigned long long)h->max_m0);
	if (h->offset_data != 4 + 4 * h->max_m0 || h->label_offset <= h->offset_data ||
	    (h->label_offset - h->offset_data) % 4 || h->size_per_element != h->label_offset + 8 ||
	    h->size_per_element > (1u << 30))
		return torn(c, "header.bin element layout (data %llu, label %llu, size %llu) does not "
			    "match maxM0 %llu", (unsigned long long)h->offset_data,
			    (unsigned long long)h->label_offset,
			    (unsigned long long)h->size_per_element, (unsigned long long)h->max_m0);
	if (!isfinite(h->mult) || fabs(h->mult * log((double)h->m) - 1.0) > 1e-6)
		return torn(c, "header.bin level multiplier %g is not 1/ln(M %llu)", h->mult,
			    (unsigned long long)h->m);
	return 0;
}

/* The header's counts, which every persist rewrites. */
static int check_header(struct hv_ctx *c)
{
	const struct hv_header *h = &c->h;
	int rc = check_layout(c);
	if (rc)
		return rc;
	if (h->count > h->max_elements)
		return torn(c, "header.bin counts %llu elements, more than its capacity %llu",
			    (unsigned long long)h->count, (unsigned long long)h->max_elements);
	if (h->count > UINT32_MAX)
		return torn(c, "header.bin counts %llu elements, more than ids can address",
			    (unsigned long long)h->count);
	if (h->count == 0 && h->maxlevel != -1)
		return torn(c, "header.bin has no elements but max level %d", h->maxlevel);
	if (h->count > 0 && (h->maxlevel < 0 || h->maxlevel > HV_MAX_LEVEL))
		return torn(c, "header.bin has %llu elements but max level %d",
			    (unsigned long long)h->count, h->maxlevel);
	if (h->count > 0 && h->enterpoint >= h->count)
		return torn(c, "header.bin entry point %u is not below its count %llu", h->enterpoint,
			    (unsigned long long)h->count);
	c->links_upper = 4 + 4 * h->max_m;
	c->dim = (h->label_offset - h->offset_data) / 4;
	return 0;
}

static int check_sizes(struct hv_ctx *c)
{
	const struct hv_header *h = &c->h;
	off_t d = c->size[HV_DATA_LEVEL0], l = c->size[HV_LENGTH];

	/* Created at capacity and written slot-wise, so whole slots, at least one per element
	 * (more is fine: the capacity can shrink on reload, and resizing extends it lazily). */
	if ((uint64_t)d % h->size_per_element)
		return torn(c, "data_level0.bin is %lld bytes, not whole %llu-byte elements",
			    (long long)d, (unsigned long long)h->size_per_element);
	if ((uint64_t)d / h->size_per_element < h->count)
		return torn(c, "data_level0.bin holds %llu elements, header.bin counts %llu",
			    (unsigned long long)((uint64_t)d / h->size_per_element),
			    (unsigned long long)h->count);
	if ((uint64_t)l % 4 || (uint64_t)l / 4 < h->count)
		return torn(c, "length.bin is %lld bytes, header.bin counts %llu elements",
			    (long long)l, (unsigned long long)h->count);
	return 0;
}

/* Pass over link_lists.bin for the element levels and the file's exact length. */
static int scan_levels(struct hv_ctx *c, struct hv_rd *r)
{
	const struct hv_header *h = &c->h;
	off_t size = c->size[HV_LINK_LISTS];
	int top = -1, rc;

	for (uint64_t i = 0; i < h->count; i++) {
		uint8_t b[4];
		uint32_t n;

		if ((rc = rd_get(r, b, 4)) == -ENODATA || rd_pos(r) > size)
			return torn(c, "link_lists.bin ends at element %llu of the %llu header.bin counts",
				    (unsigned long long)i, (unsigned long long)h->count);
		if (rc < 0)
			return rc;
		n = get32(b);
		if (n % c->links_upper || n / c->links_upper > (uint64_t)h->maxlevel)
			return torn(c, "link_lists.bin gives element %llu %u bytes of upper links, not "
				    "up to %d levels of %llu", (unsigned long long)i, n, h->maxlevel,
				    (unsigned long long)c->links_upper);
		c->levels[i] = (uint8_t)(n / c->links_upper);
		if (c->levels[i] > top)
			top = c->levels[i];
		if (rd_pos(r) + (off_t)n > size)
			return torn(c, "link_lists.bin ends inside element %llu of the %llu header.bin "
				    "counts", (unsigned long long)i, (unsigned long long)h->count);
		rd_skip(r, n);
	}
	if (rd_pos(r) != size)
		return torn(c, "link_lists.bin has %lld bytes past the lists of the %llu elements "
			    "header.bin counts", (long long)(size - rd_pos(r)),
			    (unsigned long long)h->count);
	if (h->count && top != h->maxlevel)
		return torn(c, "header.bin max level is %d, the elements' highest is %d", h->maxlevel,
			    top);
	if (h->count && c->levels[h->enterpoint] != h->maxlevel)
		return torn(c, "entry point %u has level %d, not the max level %d", h->enterpoint,
			    c->levels[h->enterpoint], h->maxlevel);
	return 0;
}

/* Neighbour lists share one rule at every level: a 16-bit count within the level's bound, a
 * clear high half (level 0 may carry the delete mark), ids of existing elements that reach the
 * level (hnswlib refuses to link to an element below it). */
static int check_list(struct hv_ctx *c, const uint8_t *p, uint64_t id, int level)
{
	uint64_t bound = level ? c->h.max_m : c->h.max_m0;
	uint32_t word = get32(p), n = word & 0xffff;
	uint32_t high = word >> 16;

	if (high & ~(level ? 0u : HV_DELETE_MARK))
		return torn(c, "element %llu level %d has link word %#x", (unsigned long long)id, level,
			    word);
	if (n > bound)
		return torn(c, "element %llu level %d has %u links, more than %llu",
			    (unsigned long long)id, level, n, (unsigned long long)bound);
	if (level == 0 && n == 0 && c->h.count > 1)
		return torn(c, "element %llu has no level-0 links among %llu elements (its slot is "
			    "older than header.bin)", (unsigned long long)id,
			    (unsigned long long)c->h.count);
	for (uint32_t k = 0; k < n; k++) {
		uint32_t nb = get32(p + 4 + 4 * (size_t)k);
		if (nb >= c->h.count)
			return torn(c, "element %llu level %d links to %u, beyond the %llu elements "
				    "header.bin counts", (unsigned long long)id, level, nb,
				    (unsigned long long)c->h.count);
		if (c->levels[nb] < level)
			return torn(c, "element %llu level %d links to %u, which has level %d",
				    (unsigned long long)id, level, nb, c->levels[nb]);
	}
	return 0;
}

static int check_upper(struct hv_ctx *c, struct hv_rd *r)
{
	uint8_t *blk = malloc(c->links_upper);
	int rc = 0;

	if (!blk)
		return -ENOMEM;
	for (uint64_t i = 0; i < c->h.count && rc == 0; i++) {
		uint8_t b[4];
		if ((rc = rd_get(r, b, 4)) < 0)
			break;
		for (int l = 1; l <= c->levels[i] && rc == 0; l++)
			if ((rc = rd_get(r, blk, c->links_upper)) == 0)
				rc = check_list(c, blk, i, l);
	}
	free(blk);
	/* The first pass measured the file; running short now means it changed under us. */
	return rc == -ENODATA ? torn(c, "link_lists.bin shrank while read") : rc;
}

static void bit_set(uint8_t *m, uint64_t i)
{
	m[i / 8] |= (uint8_t)(1u << (i % 8));
}

static int bit_get(const uint8_t *m, uint64_t i)
{
	return m[i / 8] >> (i % 8) & 1;
}

static int check_level0(struct hv_ctx *c, const struct hv_pickle *pk)
{
	const struct hv_header *h = &c->h;
	uint64_t per = h->size_per_element;
	uint64_t chunk = HV_READ_CHUNK / per ? HV_READ_CHUNK / per : 1;
	uint8_t *buf = malloc(chunk * per), *seen = NULL;
	int rc = 0;

	if (!buf)
		return -ENOMEM;
	/* Labels are only known to be 1..total when the pickle says how many were added. */
	if (pk->has_total && !(seen = calloc(pk->total / 8 + 1, 1))) {
		rc = -ENOMEM;
		goto out;
	}
	for (uint64_t first = 0; first < h->count && rc == 0; first += chunk) {
		uint64_t n = h->count - first < chunk ? h->count - first : chunk;
		if ((rc = hv_pread(c->fd[HV_DATA_LEVEL0], buf, n * per, (off_t)(first * per))) < 0) {
			if (rc == -ENODATA)
				rc = torn(c, "data_level0.bin shrank while read");
			break;
		}
		for (uint64_t k = 0; k < n && rc == 0; k++) {
			const uint8_t *el = buf + k * per;
			uint64_t label = get64(el + h->label_offset);
			if ((rc = check_list(c, el, first + k, 0)))
				break;
			if (!seen)
				continue;
			if (label == 0 || label > pk->total)
				rc = torn(c, "element %llu has label %llu, outside the 1..%llu the pickle "
					  "has added", (unsigned long long)(first + k),
					  (unsigned long long)label, (unsigned long long)pk->total);
			else if (bit_get(seen, label))
				rc = torn(c, "label %llu is held by two elements",
					  (unsigned long long)label);
			else
				bit_set(seen, label);
		}
	}
out:
	free(seen);
	free(buf);
	return rc;
}

/* Python pickles from protocol 4 on are framed: FRAME (0x95) and an 8-byte length. Memo
 * opcodes may sit between a key and its value. */
static size_t pk_skip_memo(const uint8_t *p, size_t i, size_t n)
{
	for (;;) {
		if (i < n && p[i] == 0x94)
			i += 1;           /* MEMOIZE */
		else if (i < n && p[i] == 'q')
			i += 2;           /* BINPUT */
		else if (i < n && p[i] == 'r')
			i += 5;           /* LONG_BINPUT */
		else
			return i;
	}
}

/* The integer after the dict key `key` in the first n bytes, as written by pickle.dump or
 * serde_pickle: 1 found, 0 absent or not an integer (None, a legacy text form). */
static int pk_find_int(const uint8_t *p, size_t n, const char *key, uint64_t *out)
{
	size_t kl = strlen(key);

	for (size_t i = 5; i + kl <= n; i++) {
		if (memcmp(p + i, key, kl))
			continue;
		int short_str = p[i - 2] == 0x8c && p[i - 1] == kl;         /* SHORT_BINUNICODE */
		int long_str = p[i - 5] == 'X' && get32(p + i - 4) == kl;    /* BINUNICODE */
		if (!short_str && !long_str)
			continue;
		size_t v = pk_skip_memo(p, i + kl, n);
		if (v >= n)
			return 0;
		switch (p[v]) {
		case 'K':
			if (v + 2 > n)
				return 0;
			*out = p[v + 1];
			return 1;
		case 'M':
			if (v + 3 > n)
				return 0;
			*out = (uint64_t)p[v + 1] | (uint64_t)p[v + 2] << 8;
			return 1;
		case 'J':
			if (v + 5 > n || (int32_t)get32(p + v + 1) < 0)
				return 0;
			*out = get32(p + v + 1);
			return 1;
		case 0x8a: {        /* LONG1: little-endian two's complement */
			if (v + 2 > n || p[v + 1] > 8 || v + 2 + p[v + 1] > n)
				return 0;
			uint64_t x = 0;
			for (int b = p[v + 1] - 1; b >= 0; b--)
				x = x << 8 | p[v + 2 + b];
			if (p[v + 1] && p[v + 1 + p[v + 1]] & 0x80)
				return 0;
			*out = x;
			return 1;
		}
		default:
			return 0;
		}
	}
	return 0;
}

/* The pickle is truncated and rewritten through a buffered file, so a copy taken during the
 * rewrite is empty or cut short: a whole one ends with STOP and its frames add up. */
static int read_pickle(struct hv_ctx *c, struct hv_pickle *pk)
{
	off_t size = c->size[HV_PICKLE];
	size_t n = size < HV_PICKLE_HEAD ? (size_t)size : HV_PICKLE_HEAD;
	uint8_t *head, last;
	int rc;

	memset(pk, 0, sizeof *pk);
	if (c->fd[HV_PICKLE] < 0)
		return 0;
	pk->present = 1;
	if (size < 3)
		return torn(c, "index_metadata.pickle is %lld bytes, caught inside its rewrite",
			    (long long)size);
	if ((rc = hv_pread(c->fd[HV_PICKLE], &last, 1, size - 1)) < 0)
		return rc == -ENODATA ? torn(c, "index_metadata.pickle shrank while read") : rc;
	if (last != '.')
		return torn(c, "index_metadata.pickle does not end with STOP, caught inside its "
			    "rewrite");
	if (!(head = malloc(n)))
		return -ENOMEM;
	if ((rc = hv_pread(c->fd[HV_PICKLE], head, n, 0)) < 0) {
		rc = rc == -ENODATA ? torn(c, "index_metadata.pickle shrank while read") : rc;
		goto out;
	}
	if (head[0] == 0x80 && head[1] >= 4 && head[2] == 0x95) {
		off_t at = 2;
		uint8_t fh[9];
		while (at < size) {
			if ((rc = hv_pread(c->fd[HV_PICKLE], fh, sizeof fh, at)) < 0 || fh[0] != 0x95)
				break;
			at += (off_t)sizeof fh + (off_t)get64(fh + 1);
		}
		if (rc == -ENODATA || at > size) {
			rc = torn(c, "index_metadata.pickle is cut inside a frame, caught inside its "
				  "rewrite");
			goto out;
		}
		if (rc < 0)
			goto out;
	}
	pk->has_total = pk_find_int(head, n, "total_elements_added", &pk->total);
	pk->has_dim = pk_find_int(head, n, "dimensionality", &pk->dim);
	rc = 0;
out:
	free(head);
	return rc;
}

static int check_pickle(struct hv_ctx *c, const struct hv_pickle *pk)
{
	/* hnswlib's init writes an empty index; the pickle first appears at the end of the first
	 * persist, whose header.bin already counts the elements. */
	if (!pk->present && c->h.count)
		return torn(c, "header.bin counts %llu elements but there is no index_metadata.pickle",
			    (unsigned long long)c->h.count);
	if (pk->has_dim && pk->dim != c->dim)
		return torn(c, "index_metadata.pickle has dimensionality %llu, header.bin %llu",
			    (unsigned long long)pk->dim, (unsigned long long)c->dim);
	if (pk->has_total && pk->total != c->h.count)
		return torn(c, "index_metadata.pickle has %llu elements added, header.bin counts %llu",
			    (unsigned long long)pk->total, (unsigned long long)c->h.count);
	return 0;
}

static int open_files(struct hv_ctx *c, int dirfd)
{
	for (int i = 0; i < HV_NFILES; i++) {
		struct stat st;
		c->fd[i] = openat(dirfd, hv_file_names[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (c->fd[i] < 0) {
			if (i == HV_PICKLE && errno == ENOENT)
				continue;
			return -errno;
		}
		if (fstat(c->fd[i], &st) < 0)
			return -errno;
		if (!S_ISREG(st.st_mode))
			return -EINVAL;
		c->size[i] = st.st_size;
	}
	return 0;
}

int hv_check(int dirfd, char *why, size_t whylen)
{
	struct hv_ctx c = { .why = why, .whylen = whylen };
	struct hv_pickle pk;
	struct hv_rd r = { 0 };
	int rc;

	for (int i = 0; i < HV_NFILES; i++)
		c.fd[i] = -1;
	if (why && whylen)
		why[0] = '\0';
	if ((rc = open_files(&c, dirfd)) || (rc = read_header(&c)) || (rc = check_header(&c)) ||
	    (rc = check_sizes(&c)) || (rc = read_pickle(&c, &pk)) || (rc = check_pickle(&c, &pk)))
		goto out;
	if (!(c.levels = malloc(c.h.count ? c.h.count : 1)) || !(r.buf = malloc(HV_READ_CHUNK))) {
		rc = -ENOMEM;
		goto out;
	}
	r.fd = c.fd[HV_LINK_LISTS];
	if ((rc = scan_levels(&c, &r)))
		goto out;
	if (c.h.maxlevel > 0) {
		r.base = 0, r.have = r.at = 0;
		if ((rc = check_upper(&c, &r)))
			goto out;
	}
	rc = check_level0(&c, &pk);
out:
	free(r.buf);
	free(c.levels);
	for (int i = 0; i < HV_NFILES; i++)
		if (c.fd[i] >= 0)
			close(c.fd[i]);
	return rc;
}

int hv_is_segment(int dirfd)
{
	for (int i = 0; i < HV_PICKLE; i++) {
		struct stat st;
		if (fstatat(dirfd, hv_file_names[i], &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode))
			return 0;
	}
	/* Files of these names in another format are no segment of ours to judge. */
	struct hv_ctx c = { 0 };
	struct stat st;
	c.fd[HV_HEADER] = openat(dirfd, hv_file_names[HV_HEADER], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	int seg = c.fd[HV_HEADER] >= 0 && fstat(c.fd[HV_HEADER], &st) == 0 &&
		  (c.size[HV_HEADER] = st.st_size, read_header(&c) == 0) && check_layout(&c) == 0;
	if (c.fd[HV_HEADER] >= 0)
		close(c.fd[HV_HEADER]);
	return seg;
}

static int ts_after(struct timespec a, struct timespec b)
{
	return a.tv_sec > b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec > b.tv_nsec);
}

int hv_order_ok(const struct timespec mt[HV_NFILES])
{
	int last = mt[HV_PICKLE].tv_sec || mt[HV_PICKLE].tv_nsec ? HV_PICKLE : HV_LINK_LISTS;

	for (int i = 0; i < last; i++)
		if (ts_after(mt[i], mt[i + 1]))
			return 0;
	return 1;
}
