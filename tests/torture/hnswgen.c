/* SPDX-License-Identifier: GPL-2.0-or-later */
/* See hnswgen.h. Layouts follow chroma's hnswlib fork (hnswalg.h); the pickle follows what
 * CPython's pickle.dump(protocol 5) emits for chroma's PersistentData object. */
#include "hnswgen.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>

#define HG_DELETE_MARK 0x01
#define HG_SAMPLE 24              /* candidates looked at per level of an insert */
#define HG_FRAME 65536            /* CPython's frame size target */
#define HG_FILE_CHUNK 8192        /* CPython's buffered file writes in this size */
#define HG_SETITEMS_BATCH 1000    /* CPython batches dict items by this many */

static const char *const hg_names[5] = {
	"header.bin", "data_level0.bin", "length.bin", "link_lists.bin", "index_metadata.pickle",
};

static uint64_t rnd(struct hg_index *x)
{
	x->rng ^= x->rng >> 12;
	x->rng ^= x->rng << 25;
	x->rng ^= x->rng >> 27;
	return x->rng * 0x2545F4914F6CDD1DULL;
}

static double rnd_unit(struct hg_index *x)   /* (0, 1] */
{
	return ((rnd(x) >> 11) + 1) * (1.0 / 9007199254740992.0);
}

static int write_all(int fd, const void *p, size_t n, off_t off)
{
	const uint8_t *b = p;

	while (n) {
		ssize_t w = pwrite(fd, b, n, off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		b += w, n -= (size_t)w, off += w;
	}
	return 0;
}

static uint8_t *slot(const struct hg_index *x, uint64_t id)
{
	return x->level0 + id * x->per_element;
}

static uint32_t *list_at(const struct hg_index *x, uint64_t id, int level)
{
	return level ? (uint32_t *)(void *)(x->upper[id] + (size_t)(level - 1) * x->upper_size)
		     : (uint32_t *)(void *)slot(x, id);
}

static const float *vec(const struct hg_index *x, uint64_t id)
{
	return (const float *)(const void *)(slot(x, id) + x->data_offset);
}

static float dist(const struct hg_index *x, uint64_t a, uint64_t b)
{
	float s = 0;
	for (uint64_t i = 0; i < x->dim; i++) {
		float d = vec(x, a)[i] - vec(x, b)[i];
		s += d * d;
	}
	return s;
}

static void header_bytes(const struct hg_index *x, uint8_t b[100])
{
	int32_t version = 1;
	uint64_t zero = 0, efc = 100;
#define PUT(off, v) memcpy(b + (off), &(v), sizeof(v))
	PUT(0, version);
	PUT(4, zero);
	PUT(12, x->capacity);
	PUT(20, x->count);
	PUT(28, x->per_element);
	PUT(36, x->label_offset);
	PUT(44, x->data_offset);
	PUT(52, x->maxlevel);
	PUT(56, x->enterpoint);
	PUT(60, x->max_m);
	PUT(68, x->max_m0);
	PUT(76, x->m);
	PUT(84, x->mult);
	PUT(92, efc);
#undef PUT
}

/* Reallocate an array of old entries to cap entries, zeroing the new ones. */
static int regrow(void *field, uint64_t old, uint64_t cap, size_t size)
{
	void **pp = field, *p = realloc(*pp, cap && size ? (size_t)(cap * size) : 1);

	if (!p)
		return -ENOMEM;
	memset((uint8_t *)p + old * size, 0, (size_t)((cap - old) * size));
	*pp = p;
	return 0;
}

static int grow(struct hg_index *x, uint64_t cap)
{
	uint64_t old = x->capacity;
	int rc = 0;

	rc = rc ? rc : regrow(&x->level0, old, cap, x->per_element);
	rc = rc ? rc : regrow(&x->lengths, old, cap, sizeof(float));
	rc = rc ? rc : regrow(&x->levels, old, cap, 1);
	rc = rc ? rc : regrow(&x->dirty, old, cap, 1);
	rc = rc ? rc : regrow(&x->deleted, old, cap, 1);
	rc = rc ? rc : regrow(&x->upper, old, cap, sizeof(uint8_t *));
	for (int l = 0; l <= HG_MAX_LEVEL; l++)
		rc = rc ? rc : regrow(&x->by_level[l], old, cap, sizeof(uint32_t));
	if (rc == 0)
		x->capacity = cap;
	return rc;
}

int hg_create(struct hg_index *x, int dirfd, unsigned dim, unsigned m, uint64_t capacity,
	      uint64_t seed)
{
	uint8_t hdr[100];
	int rc;

	memset(x, 0, sizeof *x);
	for (int i = 0; i < 4; i++)
		x->fd[i] = -1;
	x->dirfd = dirfd;
	x->dim = dim, x->m = m, x->max_m = m, x->max_m0 = 2 * (uint64_t)m;
	x->data_offset = 4 + 4 * x->max_m0;
	x->label_offset = x->data_offset + 4 * x->dim;
	x->per_element = x->label_offset + 8;
	x->upper_size = 4 + 4 * x->max_m;
	x->mult = 1 / log((double)m);
	x->maxlevel = -1;
	x->enterpoint = UINT32_MAX;
	x->min_capacity = capacity;
	x->rng = seed * 0x9E3779B97F4A7C15ULL + 1;
	if ((rc = grow(x, capacity)))
		return rc;
	for (int i = 0; i < 4; i++)
		if ((x->fd[i] = openat(dirfd, hg_names[i], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
				       0644)) < 0)
			return -errno;
	header_bytes(x, hdr);
	if ((rc = write_all(x->fd[0], hdr, sizeof hdr, 0)) ||
	    (rc = write_all(x->fd[1], x->level0, capacity * x->per_element, 0)) ||
	    (rc = write_all(x->fd[2], x->lengths, capacity * sizeof(float), 0)))
		return rc;
	return 0;
}

int hg_ensure(struct hg_index *x, uint64_t n)
{
	uint64_t want;

	if (x->total_added + n <= x->capacity)
		return 0;
	want = (uint64_t)((double)(x->total_added + n) * 1.2);
	return grow(x, want > x->min_capacity ? want : x->min_capacity);
}

/* Up to m existing elements reaching `level`, nearest first among a random sample. */
static int pick(struct hg_index *x, uint64_t id, int level, uint32_t *out)
{
	uint32_t cand[HG_SAMPLE];
	float d[HG_SAMPLE];
	uint64_t pool = x->by_level_n[level];
	int n = 0;

	for (int t = 0; t < HG_SAMPLE && (uint64_t)n < pool; t++) {
		uint32_t c = x->by_level[level][pool <= HG_SAMPLE ? (uint64_t)t : rnd(x) % pool];
		int dup = 0;
		for (int k = 0; k < n; k++)
			dup |= cand[k] == c;
		if (dup)
			continue;
		float dc = dist(x, id, c);
		int k = n++;
		for (; k > 0 && d[k - 1] > dc; k--)
			cand[k] = cand[k - 1], d[k] = d[k - 1];
		cand[k] = c, d[k] = dc;
	}
	n = (uint64_t)n < x->m ? n : (int)x->m;
	memcpy(out, cand, (size_t)n * sizeof *out);
	return n;
}

/* Link nb back to id; a full list gives up its farthest entry, as the pruning keeps the
 * nearest. */
static void link_back(struct hg_index *x, uint32_t nb, uint32_t id, int level)
{
	uint32_t *ll = list_at(x, nb, level);
	uint64_t bound = level ? x->max_m : x->max_m0;
	uint32_t n = ll[0] & 0xffff;

	if (n < bound) {
		ll[1 + n] = id;
		ll[0] = (ll[0] & ~0xffffu) | (n + 1);
	} else {
		uint32_t far = 0;
		for (uint32_t k = 1; k < n; k++)
			if (dist(x, nb, ll[1 + k]) > dist(x, nb, ll[1 + far]))
				far = k;
		ll[1 + far] = id;
	}
	x->dirty[nb] = 1;
}

static void add_one(struct hg_index *x)
{
	uint32_t id = (uint32_t)x->count, nbs[64];
	uint8_t *el = slot(x, id);
	float *v = (float *)(void *)(el + x->data_offset), norm = 0;
	uint64_t label = x->total_added + 1;
	int level = (int)(-log(rnd_unit(x)) * x->mult);

	if (level > HG_MAX_LEVEL)
		level = HG_MAX_LEVEL;
	memset(el, 0, x->per_element);
	for (uint64_t i = 0; i < x->dim; i++) {
		v[i] = (float)(rnd_unit(x) * 2 - 1);
		norm += v[i] * v[i];
	}
	/* Stored normalized with its length aside, as the cosine space does. */
	x->lengths[id] = sqrtf(norm);
	for (uint64_t i = 0; i < x->dim; i++)
		v[i] /= x->lengths[id] + 1e-30f;
	memcpy(el + x->label_offset, &label, sizeof label);
	x->levels[id] = (uint8_t)level;
	x->upper[id] = level ? calloc((size_t)level, x->upper_size) : NULL;
	if (level && !x->upper[id])
		abort();
	for (int l = (level < x->maxlevel ? level : x->maxlevel); l >= 0; l--) {
		int n = pick(x, id, l, nbs);
		uint32_t *ll = list_at(x, id, l);
		ll[0] = (uint32_t)n;
		for (int k = 0; k < n; k++) {
			ll[1 + k] = nbs[k];
			link_back(x, nbs[k], id, l);
		}
	}
	if (level > x->maxlevel)
		x->maxlevel = level, x->enterpoint = id;
	for (int l = 0; l <= level; l++)
		x->by_level[l][x->by_level_n[l]++] = id;
	x->dirty[id] = 1;
	x->count++, x->total_added++;
}

int hg_add(struct hg_index *x, uint64_t n)
{
	if (x->count + n > x->capacity || 2 * x->m > 64)
		return -ENOSPC;
	while (n--)
		add_one(x);
	return 0;
}

int hg_delete(struct hg_index *x, uint64_t id)
{
	if (id >= x->count || x->deleted[id])
		return -EINVAL;
	slot(x, id)[2] |= HG_DELETE_MARK;
	x->deleted[id] = 1;
	x->dirty[id] = 1;
	return 0;
}

/* ---- the pickle ------------------------------------------------------------------------- */

struct hg_buf {
	uint8_t *p;
	size_t n, cap;
	int err;
};

static void put(struct hg_buf *b, const void *p, size_t n)
{
	if (b->n + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->n + n)
			cap *= 2;
		uint8_t *q = realloc(b->p, cap);
		if (!q) {
			b->err = -ENOMEM;
			return;
		}
		b->p = q, b->cap = cap;
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

static void put1(struct hg_buf *b, uint8_t c)
{
	put(b, &c, 1);
}

/* CPython's save_long for non-negative values. */
static void put_int(struct hg_buf *b, uint64_t v)
{
	if (v < 256) {
		put1(b, 'K'), put1(b, (uint8_t)v);
	} else if (v < 65536) {
		put1(b, 'M'), put1(b, (uint8_t)v), put1(b, (uint8_t)(v >> 8));
	} else if (v < 0x80000000u) {
		uint32_t w = (uint32_t)v;
		put1(b, 'J'), put(b, &w, 4);
	} else {
		uint8_t n = 0, bytes[9];
		for (uint64_t t = v; t; t >>= 8)
			bytes[n++] = (uint8_t)t;
		if (bytes[n - 1] & 0x80)
			bytes[n++] = 0;
		put1(b, 0x8a), put1(b, n), put(b, bytes, n);
	}
}

/* A memoized short string; returns its memo index. */
static uint32_t put_str(struct hg_buf *b, uint32_t *memo, const char *s)
{
	size_t n = strlen(s);
	put1(b, 0x8c), put1(b, (uint8_t)n), put(b, s, n), put1(b, 0x94);
	return (*memo)++;
}

static void put_get(struct hg_buf *b, uint32_t idx)
{
	if (idx < 256) {
		put1(b, 'h'), put1(b, (uint8_t)idx);
	} else {
		put1(b, 'j'), put(b, &idx, 4);
	}
}

/* Frames close at the first item boundary past the target, as CPython's framer does. */
static void frame_commit(struct hg_buf *out, struct hg_buf *fr, int force)
{
	uint64_t len = fr->n;

	if (!force && fr->n < HG_FRAME)
		return;
	put1(out, 0x95), put(out, &len, 8), put(out, fr->p, fr->n);
	fr->n = 0;
}

static void id_name(char *s, size_t n, uint64_t label)
{
	snprintf(s, n, "id-%010llu", (unsigned long long)label);
}

static uint64_t label_of(const struct hg_index *x, uint64_t id)
{
	uint64_t l;
	memcpy(&l, slot(x, id) + x->label_offset, sizeof l);
	return l;
}

/* One dict of the live elements; kind 0: id -> label, 1: label -> id, 2: id -> seq id. */
static void put_map(struct hg_index *x, struct hg_buf *out, struct hg_buf *fr, uint32_t *memo,
		    uint32_t *id_memo, const char *key, int kind)
{
	uint64_t in_batch = 0;
	char s[32];

	put_str(fr, memo, key);
	put1(fr, '}'), put1(fr, 0x94), (*memo)++;
	for (uint64_t i = 0; i < x->count; i++) {
		if (x->deleted[i])
			continue;
		if (in_batch == 0)
			put1(fr, '(');
		uint64_t label = label_of(x, i);
		id_name(s, sizeof s, label);
		if (kind == 0)
			id_memo[i] = put_str(fr, memo, s), put_int(fr, label);
		else if (kind == 1)
			put_int(fr, label), put_get(fr, id_memo[i]);
		else
			put_get(fr, id_memo[i]), put_int(fr, label);
		if (++in_batch == HG_SETITEMS_BATCH) {
			put1(fr, 'u');
			in_batch = 0;
		}
		frame_commit(out, fr, 0);
	}
	if (in_batch)
		put1(fr, 'u');
}

static int pickle_bytes(struct hg_index *x, struct hg_buf *out)
{
	struct hg_buf fr = { 0 };
	uint32_t memo = 0, *id_memo = calloc(x->count ? x->count : 1, sizeof *id_memo);
	int rc;

	if (!id_memo)
		return -ENOMEM;
	put1(out, 0x80), put1(out, 5);
	put_str(&fr, &memo, "chromadb.segment.impl.vector.local_persistent_hnsw");
	put_str(&fr, &memo, "PersistentData");
	put1(&fr, 0x93), put1(&fr, 0x94), memo++;          /* STACK_GLOBAL */
	put1(&fr, ')'), put1(&fr, 0x81), put1(&fr, 0x94), memo++;  /* NEWOBJ */
	put1(&fr, '}'), put1(&fr, 0x94), memo++, put1(&fr, '(');    /* the state dict */
	put_str(&fr, &memo, "dimensionality"), put_int(&fr, x->dim);
	put_str(&fr, &memo, "total_elements_added"), put_int(&fr, x->total_added);
	put_map(x, out, &fr, &memo, id_memo, "id_to_label", 0);
	put_map(x, out, &fr, &memo, id_memo, "label_to_id", 1);
	put_map(x, out, &fr, &memo, id_memo, "id_to_seq_id", 2);
	put1(&fr, 'u'), put1(&fr, 'b'), put1(&fr, '.');     /* SETITEMS, BUILD, STOP */
	frame_commit(out, &fr, 1);
	rc = out->err ? out->err : fr.err;
	free(fr.p);
	free(id_memo);
	return rc;
}

/* ---- persist ---------------------------------------------------------------------------- */

static void stall(struct hg_index *x, int step)
{
	if (x->stall)
		x->stall(x->stall_arg, step);
}

static int persist_index(struct hg_index *x)
{
	uint8_t hdr[100];
	off_t off = 0;
	int rc, any = 0;

	for (uint64_t i = 0; i < x->count; i++)
		any |= x->dirty[i];
	if (!any)      /* hnswlib's persistDirty returns before the header when nothing changed */
		return 0;
	header_bytes(x, hdr);
	if ((rc = write_all(x->fd[0], hdr, sizeof hdr, 0)))
		return rc;
	stall(x, 1);
	for (uint64_t i = 0; i < x->count; i++)
		if (x->dirty[i] && (rc = write_all(x->fd[1], slot(x, i), x->per_element,
						   (off_t)(i * x->per_element))))
			return rc;
	stall(x, 2);
	for (uint64_t i = 0; i < x->count; i++)
		if (x->dirty[i] && (rc = write_all(x->fd[2], &x->lengths[i], sizeof(float),
						   (off_t)(i * sizeof(float)))))
			return rc;
	stall(x, 3);
	for (uint64_t i = 0; i < x->count; i++) {
		uint32_t size = (uint32_t)(x->levels[i] * x->upper_size);
		if (x->dirty[i] && ((rc = write_all(x->fd[3], &size, 4, off)) ||
				    (size && (rc = write_all(x->fd[3], x->upper[i], size, off + 4)))))
			return rc;
		off += 4 + size;
	}
	memset(x->dirty, 0, x->count);
	return 0;
}

int hg_persist(struct hg_index *x)
{
	struct hg_buf pk = { 0 };
	int fd = -1, rc;

	if ((rc = persist_index(x)) || (rc = pickle_bytes(x, &pk)))
		goto out;
	stall(x, 4);
	/* Python's open(..., "wb"): truncate in place, then buffered writes. */
	fd = openat(x->dirfd, hg_names[4], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	stall(x, 5);
	for (size_t at = 0; at < pk.n && rc == 0; at += HG_FILE_CHUNK)
		rc = write_all(fd, pk.p + at, pk.n - at < HG_FILE_CHUNK ? pk.n - at : HG_FILE_CHUNK,
			       (off_t)at);
out:
	if (fd >= 0 && close(fd) < 0 && rc == 0)
		rc = -errno;
	free(pk.p);
	return rc;
}

void hg_close(struct hg_index *x)
{
	for (int i = 0; i < 4; i++)
		if (x->fd[i] >= 0)
			close(x->fd[i]);
	for (uint64_t i = 0; i < x->count; i++)
		free(x->upper[i]);
	for (int l = 0; l <= HG_MAX_LEVEL; l++)
		free(x->by_level[l]);
	free(x->level0), free(x->lengths), free(x->levels), free(x->dirty), free(x->deleted);
	free(x->upper);
	memset(x, 0, sizeof *x);
}
