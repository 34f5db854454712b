/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Reading and writing the snapshot manifest (format in manifest.h). */
#include "manifest.h"
#include "copy.h"
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MF_MAGIC "stillfs-manifest"
#define MF_VERSION 2

static size_t mf_nblocks(uint64_t size)
{
	return (size_t)((size + DD_BLOCK - 1) / DD_BLOCK);
}

/* Do blocks (of a database of size bytes) add up to digest? */
static int mf_blocks_match(uint8_t (*blocks)[32], uint64_t size, const uint8_t digest[32])
{
	struct dd_blocks v = { .size = size, .n = mf_nblocks(size), .d = blocks };
	uint8_t sum[32];
	dd_digest(&v, sum);
	return !memcmp(sum, digest, 32);
}

/* A path the reader accepts: relative, and no component that climbs out or stays put, for a
 * manifest may come from a downloaded copy. */
static int mf_path_ok(const char *path)
{
	if (!path || !path[0] || path[0] == '/')
		return 0;
	for (const char *p = path; p; p = strchr(p, '/')) {
		if (*p == '/')
			p++;
		if (!strncmp(p, "..", 2) && (p[2] == '/' || !p[2]))
			return 0;
		if (p[0] == '.' && (p[1] == '/' || !p[1]))
			return 0;
		if (!p[0] || p[0] == '/')
			return 0; /* "a/" or "a//b" */
	}
	return 1;
}

static int mf_push(struct mf *m, const struct mf_entry *e)
{
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 256;
		struct mf_entry *ne = realloc(m->e, cap * sizeof *ne);
		if (!ne)
			return -ENOMEM;
		m->e = ne;
		m->cap = cap;
	}
	m->e[m->n++] = *e;
	return 0;
}

int mf_add(struct mf *m, const struct mf_entry *e)
{
	return mf_push(m, e);
}

/* ---- writing ---------------------------------------------------------------------------- */

/* Everything written goes into the end line's digest too. */
struct mf_out {
	FILE *f;
	struct sha256 sha;
	char *buf;
	size_t room;
	int rc;
};

static void mf_put(struct mf_out *o, const char *s, size_t len)
{
	if (o->rc)
		return;
	sha256_update(&o->sha, s, len);
	if (fwrite(s, 1, len, o->f) != len)
		o->rc = -EIO;
}

static void mf_printf(struct mf_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void mf_printf(struct mf_out *o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int len = vsnprintf(o->buf, o->room, fmt, ap);
	va_end(ap);
	if (len >= 0 && (size_t)len >= o->room) {
		char *nb = realloc(o->buf, (size_t)len + 1);
		if (!nb) {
			o->rc = o->rc ? o->rc : -ENOMEM;
			return;
		}
		o->buf = nb;
		o->room = (size_t)len + 1;
		va_start(ap, fmt);
		len = vsnprintf(o->buf, o->room, fmt, ap);
		va_end(ap);
	}
	if (len < 0)
		o->rc = o->rc ? o->rc : -EIO;
	else
		mf_put(o, o->buf, (size_t)len);
}

static int mf_by_path(const void *a, const void *b)
{
	return strcmp(((const struct mf_entry *)a)->path, ((const struct mf_entry *)b)->path);
}

static int mf_has_blocks(const struct mf_entry *e)
{
	return e->kind == 's' && e->blocks && e->has_digest && mf_nblocks(e->size) > 1 &&
	       mf_blocks_match(e->blocks, e->size, e->digest);
}

static void mf_write_header(struct mf_out *o, const struct cap_stats *st, size_t n,
			    uint64_t files, uint64_t blocks)
{
	struct tm tm;
	char when[64];
	gmtime_r(&st->cut.tv_sec, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	mf_printf(o, MF_MAGIC " %d\n", MF_VERSION);
	mf_printf(o, "id %s\n", st->id);
	mf_printf(o, "cut_ns %" PRId64 "\n", ut_ts_ns(st->cut));
	mf_printf(o, "cut %s.%09ldZ\n", when, st->cut.tv_nsec);
	mf_printf(o, "digest sha256-1m\n");
	mf_printf(o, "duration_s %.6f\n", st->duration_s);
	mf_printf(o, "lock_max_s %.6f\n", st->lock_max_s);
	mf_printf(o, "retries %u\n", st->retries);
	mf_printf(o, "files %" PRIu64 "\n", files);
	mf_printf(o, "bytes_copied %" PRIu64 "\n", st->bytes_copied);
	mf_printf(o, "bytes_linked %" PRIu64 "\n", st->bytes_linked);
	mf_printf(o, "bytes_cloned %" PRIu64 "\n", st->bytes_cloned);
	mf_printf(o, "entries %zu\n", n);
	mf_printf(o, "blocks %" PRIu64 "\n", blocks);
	mf_printf(o, ".\n");
}

static void mf_write_entry(struct mf_out *o, const struct mf_entry *e, const char *path)
{
	char hex[65] = "-";
	if (e->has_digest)
		sha256_hex(e->digest, hex);
	mf_printf(o, "%c %o %u %u %" PRIu64 " %" PRId64 " %s %s %s\n", e->kind, e->mode, e->uid,
		  e->gid, e->size, e->mtime_ns, hex, e->ident ? e->ident : "-", path);
}

static void mf_write_blocks(struct mf_out *o, const struct mf_entry *e, const char *path)
{
	mf_printf(o, "blocks %s ", path);
	for (size_t i = 0, n = mf_nblocks(e->size); i < n; i++) {
		char hex[65];
		sha256_hex(e->blocks[i], hex);
		mf_put(o, hex, 64);
	}
	mf_put(o, "\n", 1);
}

int mf_write_each(FILE *f, const struct cap_stats *stats, size_t n, mf_get_fn *get, void *arg)
{
	struct mf_out o = { .f = f };
	uint64_t files = 0, blocks = 0;
	const char *last = NULL;
	for (size_t i = 0; i < n; i++) {
		struct mf_entry e;
		get(arg, i, &e);
		if (!strchr("dfsl", e.kind) || !e.kind || !mf_path_ok(e.path) ||
		    (last && !strcmp(last, e.path)) || (e.ident && (!e.ident[0] || strpbrk(e.ident, " \n"))))
			return -EINVAL;
		last = e.path;
		files += e.kind == 'f' || e.kind == 's';
		blocks += mf_has_blocks(&e);
	}
	sha256_init(&o.sha);
	mf_write_header(&o, stats, n, files, blocks);
	/* Entries, then block lines: each pass in path order. */
	for (int pass = 0; pass < 2 && !o.rc; pass++) {
		for (size_t i = 0; i < n && !o.rc; i++) {
			struct mf_entry e;
			get(arg, i, &e);
			if (pass && !mf_has_blocks(&e))
				continue;
			char *path = cp_escape(e.path);
			if (!path) {
				o.rc = -ENOMEM;
				break;
			}
			if (pass)
				mf_write_blocks(&o, &e, path);
			else
				mf_write_entry(&o, &e, path);
			free(path);
		}
	}
	uint8_t d[32];
	char hex[65];
	sha256_final(&o.sha, d);
	sha256_hex(d, hex);
	if (!o.rc && fprintf(f, "end %s\n", hex) < 0)
		o.rc = -EIO;
	free(o.buf);
	if (!o.rc && ferror(f))
		o.rc = -EIO;
	return o.rc;
}

static void mf_get_own(void *arg, size_t i, struct mf_entry *e)
{
	*e = ((const struct mf *)arg)->e[i];
}

int mf_write(FILE *f, struct mf *m)
{
	if (m->n)
		qsort(m->e, m->n, sizeof *m->e, mf_by_path);
	return mf_write_each(f, &m->stats, m->n, mf_get_own, m);
}

/* ---- reading ---------------------------------------------------------------------------- */

enum { MF_FIRST, MF_HEADER, MF_ENTRIES, MF_BLOCKS, MF_END, MF_DONE };

struct mf_in {
	struct mf *m;
	struct sha256 sha;
	int state, lineno;
	uint64_t want_entries, want_blocks, want_files; /* as the header says */
	unsigned have;           /* which of them the header gave: bits 1, 2, 4 */
	uint64_t files, blocks;  /* as found */
	size_t last_block;       /* entry index of the last block line */
};

static int mf_bad(struct mf_in *in, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int mf_bad(struct mf_in *in, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(in->m->why, sizeof in->m->why, fmt, ap);
	va_end(ap);
	return -EBADMSG;
}

/* A whole unsigned number in base, nothing else; manifests may come from anywhere. */
static int mf_num(const char *s, int base, uint64_t max, uint64_t *out)
{
	char *end;
	if (!*s || *s == '-' || *s == '+' || *s == ' ')
		return -EBADMSG;
	errno = 0;
	unsigned long long v = strtoull(s, &end, base);
	if (errno || *end || v > max)
		return -EBADMSG;
	*out = v;
	return 0;
}

static int mf_header_line(struct mf_in *in, char *line)
{
	struct cap_stats *st = &in->m->stats;
	char *val = strchr(line, ' ');
	if (!val || !val[1])
		return mf_bad(in, "line %d: not a header line (KEY VALUE)", in->lineno);
	*val++ = 0;
	static const char *const counts[] = { "entries", "blocks", "files" };
	for (unsigned k = 0; k < 3; k++) {
		if (strcmp(line, counts[k]))
			continue;
		uint64_t *want[] = { &in->want_entries, &in->want_blocks, &in->want_files };
		if (mf_num(val, 10, UINT64_MAX, want[k]) || (in->have & 1u << k))
			return mf_bad(in, "line %d: a bad or second '%s' count", in->lineno, line);
		in->have |= 1u << k;
		if (k == 2)
			st->files = in->want_files;
		return 0;
	}
	if (!strcmp(line, "id"))
		snprintf(st->id, sizeof st->id, "%s", val);
	else if (!strcmp(line, "cut_ns")) {
		long long ns = strtoll(val, NULL, 10);
		st->cut.tv_sec = (time_t)(ns / 1000000000LL);
		st->cut.tv_nsec = (long)(ns % 1000000000LL);
	} else if (!strcmp(line, "digest")) {
		if (strcmp(val, "sha256-1m"))
			return mf_bad(in, "line %d: digests of an unknown kind, %s", in->lineno, val);
	} else if (!strcmp(line, "duration_s"))
		st->duration_s = strtod(val, NULL);
	else if (!strcmp(line, "lock_max_s"))
		st->lock_max_s = strtod(val, NULL);
	else if (!strcmp(line, "retries"))
		st->retries = (unsigned)strtoul(val, NULL, 10);
	else if (!strcmp(line, "bytes_copied"))
		st->bytes_copied = strtoull(val, NULL, 10);
	else if (!strcmp(line, "bytes_linked"))
		st->bytes_linked = strtoull(val, NULL, 10);
	else if (!strcmp(line, "bytes_cloned"))
		st->bytes_cloned = strtoull(val, NULL, 10);
	return 0; /* unknown keys are for newer readers */
}

static int mf_header_end(struct mf_in *in)
{
	static const char *const counts[] = { "entries", "blocks", "files" };
	for (unsigned k = 0; k < 3; k++)
		if (!(in->have & 1u << k))
			return mf_bad(in, "the header has no '%s' count", counts[k]);
	in->state = MF_ENTRIES;
	return 0;
}

/* Split line at single spaces into at most max fields: how many, or max + 1 if more. */
static int mf_split(char *line, char **f, int max)
{
	int n = 0;
	char *save = NULL;
	for (char *t = strtok_r(line, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
		if (n == max)
			return max + 1;
		f[n++] = t;
	}
	return n;
}

static int mf_entry_line(struct mf_in *in, char *line)
{
	struct mf *m = in->m;
	struct mf_entry e = { 0 };
	char *f[9];
	uint64_t v[5];
	int n = mf_split(line, f, 9);
	if (n != 9 || strlen(f[0]) != 1 || !strchr("dfsl", f[0][0]))
		goto bad;
	char *mt = f[5][0] == '-' ? f[5] + 1 : f[5]; /* mtimes before 1970 are negative */
	if (mf_num(f[1], 8, 07777, &v[0]) || mf_num(f[2], 10, UINT32_MAX, &v[1]) ||
	    mf_num(f[3], 10, UINT32_MAX, &v[2]) || mf_num(f[4], 10, INT64_MAX, &v[3]) ||
	    mf_num(mt, 10, INT64_MAX, &v[4]))
		goto bad;
	e.kind = f[0][0];
	e.mode = (uint32_t)v[0];
	e.uid = (uint32_t)v[1];
	e.gid = (uint32_t)v[2];
	e.size = v[3];
	e.mtime_ns = mt == f[5] ? (int64_t)v[4] : -(int64_t)v[4];
	if (strcmp(f[6], "-")) {
		if (sha256_from_hex(f[6], e.digest))
			goto bad;
		e.has_digest = 1;
	}
	char *path = cp_unescape(f[8]);
	if (!mf_path_ok(path)) {
		free(path);
		goto bad;
	}
	if (m->n && strcmp(m->e[m->n - 1].path, path) >= 0) {
		int twice = !strcmp(m->e[m->n - 1].path, path);
		free(path);
		return mf_bad(in, "line %d: %s (entries are sorted by path, each listed once)",
			      in->lineno, twice ? "a path listed twice" : "entries out of order");
	}
	/* Both strings go to the arena; what a failure leaves there goes with it. */
	e.path = ut_arena_strdup(&m->text, path);
	free(path);
	if (!e.path || (strcmp(f[7], "-") && !(e.ident = ut_arena_strdup(&m->text, f[7]))))
		return -ENOMEM;
	if (mf_push(m, &e))
		return -ENOMEM;
	in->files += e.kind == 'f' || e.kind == 's';
	return 0;
bad:
	return mf_bad(in, "line %d: not an entry line (KIND MODE UID GID SIZE MTIME_NS DIGEST "
		      "IDENT PATH)", in->lineno);
}

static int mf_block_line(struct mf_in *in, char *line)
{
	struct mf *m = in->m;
	char *f[3];
	size_t k;
	if (mf_split(line, f, 3) != 3 || strcmp(f[0], "blocks"))
		return mf_bad(in, "line %d: not a block line (blocks PATH HEX)", in->lineno);
	char *path = cp_unescape(f[1]);
	const struct mf_entry *found = path ? mf_find(m, path) : NULL;
	free(path);
	if (!found)
		return mf_bad(in, "line %d: block digests of an entry not listed", in->lineno);
	k = (size_t)(found - m->e);
	struct mf_entry *e = &m->e[k];
	if (in->blocks && k <= in->last_block)
		return mf_bad(in, "line %d: block lines out of order or twice", in->lineno);
	size_t n = mf_nblocks(e->size);
	if (e->kind != 's' || !e->has_digest || n < 2 || strlen(f[2]) != n * 64)
		return mf_bad(in, "line %d: block digests that do not fit the entry", in->lineno);
	if (!(e->blocks = malloc(n * 32)))
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		char h[65];
		memcpy(h, f[2] + i * 64, 64);
		h[64] = 0;
		if (sha256_from_hex(h, e->blocks[i]))
			return mf_bad(in, "line %d: block digests that are not hex", in->lineno);
	}
	if (!mf_blocks_match(e->blocks, e->size, e->digest))
		return mf_bad(in, "line %d: block digests that do not add up to the entry's digest",
			      in->lineno);
	in->blocks++;
	in->last_block = k;
	return 0;
}

static int mf_end_line(struct mf_in *in, const char *line)
{
	uint8_t want[32], got[32];
	if (strncmp(line, "end ", 4) || sha256_from_hex(line + 4, want))
		return mf_bad(in, "line %d: not the end line (the header counts %" PRIu64
			      " entries and %" PRIu64 " block lines)", in->lineno, in->want_entries,
			      in->want_blocks);
	sha256_final(&in->sha, got);
	if (memcmp(want, got, 32))
		return mf_bad(in, "the digest on its end line does not match: it was changed or "
			      "reordered after it was written");
	if (in->files != in->want_files)
		return mf_bad(in, "the header counts %" PRIu64 " files, the entries hold %" PRIu64,
			      in->want_files, in->files);
	in->state = MF_DONE;
	return 0;
}

/* A line of one section where the header's counts say another is still due. */
static int mf_miscounted(struct mf_in *in, const char *line)
{
	const char *what = !strncmp(line, "end ", 4) ? "the end line" :
			   !strncmp(line, "blocks ", 7) ? "a block line" : NULL;
	if (!what)
		return 0;
	return mf_bad(in, "line %d: %s after %zu entries and %" PRIu64 " block lines, but the "
		      "header counts %" PRIu64 " and %" PRIu64, in->lineno, what, in->m->n,
		      in->blocks, in->want_entries, in->want_blocks);
}

/* One whole line of len bytes, its newline included. */
static int mf_line(struct mf_in *in, char *line, size_t len)
{
	if (in->state == MF_ENTRIES && in->m->n == in->want_entries)
		in->state = MF_BLOCKS;
	if (in->state == MF_BLOCKS && in->blocks == in->want_blocks)
		in->state = MF_END;
	if (in->state != MF_END)
		sha256_update(&in->sha, line, len);
	line[len - 1] = 0; /* parsing cuts it up: the digest has had it whole */
	int rc;
	switch (in->state) {
	case MF_FIRST: {
		size_t ml = strlen(MF_MAGIC);
		uint64_t v;
		if (strncmp(line, MF_MAGIC " ", ml + 1))
			return mf_bad(in, "not a stillfs manifest");
		if (mf_num(line + ml + 1, 10, 1000000, &v) || v != MF_VERSION)
			return mf_bad(in, "format version %s, but this stillfs reads version %d",
				      line + ml + 1, MF_VERSION);
		in->state = MF_HEADER;
		return 0;
	}
	case MF_HEADER:
		return strcmp(line, ".") ? mf_header_line(in, line) : mf_header_end(in);
	case MF_ENTRIES:
		if ((rc = mf_miscounted(in, line)))
			return rc;
		return mf_entry_line(in, line);
	case MF_BLOCKS:
		if (!strncmp(line, "end ", 4) && (rc = mf_miscounted(in, line)))
			return rc;
		return mf_block_line(in, line);
	case MF_END:
		return mf_end_line(in, line);
	default:
		return mf_bad(in, "line %d: more after the end line", in->lineno);
	}
}

int mf_load(int dirfd, const char *name, struct mf *m)
{
	struct mf_in in = { .m = m };
	memset(m, 0, sizeof *m);
	m->owns = 1;
	sha256_init(&in.sha);
	int rc = 0, fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	FILE *f = fd < 0 ? NULL : fdopen(fd, "r");
	if (!f) {
		rc = fd < 0 ? -errno : -ENOMEM;
		if (fd >= 0)
			close(fd);
		snprintf(m->why, sizeof m->why, "%s", strerror(-rc));
		return rc;
	}
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	while (!rc && (len = getline(&line, &cap, f)) > 0) {
		in.lineno++;
		if (line[len - 1] != '\n' || memchr(line, 0, (size_t)len)) {
			rc = line[len - 1] != '\n' ?
				mf_bad(&in, "truncated: line %d is incomplete", in.lineno) :
				mf_bad(&in, "line %d holds a NUL byte", in.lineno);
			break;
		}
		rc = mf_line(&in, line, (size_t)len);
	}
	if (!rc && ferror(f))
		rc = -EIO;
	free(line);
	fclose(f);
	if (!rc && in.state != MF_DONE)
		rc = in.lineno == 0 ? mf_bad(&in, "empty") :
		     in.state < MF_ENTRIES ? mf_bad(&in, "truncated in its header, after line %d",
						    in.lineno) :
		     mf_bad(&in, "truncated after line %d: %zu of the %" PRIu64 " entries and %"
			    PRIu64 " of the %" PRIu64 " block lines the header counts, and no end "
			    "line", in.lineno, m->n, in.want_entries, in.blocks, in.want_blocks);
	if (rc) {
		char why[sizeof m->why];
		if (rc != -EBADMSG)
			snprintf(m->why, sizeof m->why, "%s", strerror(-rc));
		memcpy(why, m->why, sizeof why);
		mf_free(m);
		memcpy(m->why, why, sizeof why);
	}
	return rc;
}

const struct mf_entry *mf_find(const struct mf *m, const char *path)
{
	/* A loaded manifest's entries are in strcmp order of their paths (mf_entry_line). */
	size_t lo = 0, hi = m->owns ? m->n : 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int d = strcmp(m->e[mid].path, path);
		if (!d)
			return &m->e[mid];
		if (d < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

int mf_keep(struct mf *m, int (*keep)(const struct mf_entry *e))
{
	/* The strings kept go to a new arena of one chunk, allocated before anything changes. */
	size_t need = 0, n = 0;
	for (size_t i = 0; i < m->n; i++)
		if (keep(&m->e[i]))
			need += strlen(m->e[i].path) + 1 + (m->e[i].ident ? strlen(m->e[i].ident) + 1 : 0);
	struct ut_arena text = { .chunk = malloc(sizeof(char *) + need), .used = sizeof(char *),
				 .room = sizeof(char *) + need };
	if (!text.chunk)
		return -ENOMEM;
	char *none = NULL; /* no chunk before it */
	memcpy(text.chunk, &none, sizeof none);
	for (size_t i = 0; i < m->n; i++) {
		struct mf_entry *e = &m->e[i];
		if (!keep(e)) {
			free(e->blocks);
			continue;
		}
		/* (cannot fail: the chunk holds them all) */
		e->path = ut_arena_strdup(&text, e->path);
		if (e->ident)
			e->ident = ut_arena_strdup(&text, e->ident);
		m->e[n++] = *e;
	}
	ut_arena_free(&m->text);
	m->text = text;
	m->n = n;
	struct mf_entry *ne = realloc(m->e, (n ? n : 1) * sizeof *ne);
	if (ne) {
		m->e = ne;
		m->cap = n ? n : 1;
	}
	return 0;
}

int mf_blocks_of(const struct mf *m, const char *path, struct dd_blocks *b)
{
	const struct mf_entry *e = mf_find(m, path);
	if (!e || !e->blocks)
		return -ENOENT;
	int rc = dd_reset(b, e->size);
	if (rc)
		return rc;
	memcpy(b->d, e->blocks, b->n * 32);
	memset(b->valid, 1, b->n);
	return 0;
}

void mf_free(struct mf *m)
{
	for (size_t i = 0; m->owns && i < m->n; i++)
		free(m->e[i].blocks);
	free(m->e);
	ut_arena_free(&m->text);
	memset(m, 0, sizeof *m);
}
