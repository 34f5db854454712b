/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Shared extents for the capture (see clone.h). */
#include "clone.h"
#include "dbdelta.h"
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

int cl_unsupported(int err)
{
	return err == -EOPNOTSUPP || err == -EXDEV || err == -EINVAL || err == -ENOTTY ||
	       err == -ENOSYS || err == -EPERM;
}

int cl_clone_new(int src, int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (ioctl(fd, FICLONE, src) == 0)
		return fd;
	int rc = -errno;
	close(fd);
	unlinkat(dirfd, name, 0);
	return rc;
}

int cl_probe(int from, int to, const char **why)
{
	struct stat a, b;
	*why = NULL;
	if (fstat(from, &a) < 0 || fstat(to, &b) < 0) {
		*why = "cannot stat the directories";
		return 0;
	}
	if (a.st_dev != b.st_dev) {
		*why = "another filesystem";
		return 0;
	}
	int s = openat(to, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	int d = s < 0 ? -1 : openat(to, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	static const char page[4096];
	int ok = d >= 0 && write(s, page, sizeof page) == (ssize_t)sizeof page &&
		 ioctl(d, FICLONE, s) == 0;
	if (!ok)
		*why = s < 0 || d < 0 ? "cannot make a test file" : "no shared extents on it";
	if (s >= 0)
		close(s);
	if (d >= 0)
		close(d);
	return ok;
}

/* ---- extent maps ------------------------------------------------------------------------ */

struct cl_map {
	struct fiemap_extent *e;
	size_t n;
};

/* Flags that make an extent's physical address say nothing reliable about its bytes. */
#define CL_UNSURE (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_ENCODED | \
		   FIEMAP_EXTENT_DATA_ENCRYPTED | FIEMAP_EXTENT_NOT_ALIGNED | \
		   FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_DATA_TAIL | FIEMAP_EXTENT_UNWRITTEN)

/* The whole extent map of fd, written back first (FIEMAP_FLAG_SYNC) if sync, so that it
 * describes what the page cache holds. 0 or -errno. */
static int cl_map_read(int fd, uint64_t len, int sync, struct cl_map *m)
{
	enum { BATCH = 64 }; /* most files have a few extents; more take more calls */
	size_t fsize = sizeof(struct fiemap) + BATCH * sizeof(struct fiemap_extent);
	struct fiemap *f = malloc(fsize);
	if (!f)
		return -ENOMEM;
	uint64_t start = 0;
	int rc = 0, flags = sync ? FIEMAP_FLAG_SYNC : 0, last = 0;
	m->e = NULL;
	m->n = 0;
	while (!last && start < len) {
		memset(f, 0, fsize); /* what the kernel fills in, valgrind cannot tell */
		f->fm_start = start;
		f->fm_length = len - start;
		f->fm_flags = (uint32_t)flags;
		f->fm_extent_count = BATCH;
		if (ioctl(fd, FS_IOC_FIEMAP, f) < 0) {
			rc = -errno;
			break;
		}
		flags = 0; /* written back once is enough */
		if (f->fm_mapped_extents == 0)
			break;
		struct fiemap_extent *ne = realloc(m->e, (m->n + f->fm_mapped_extents) * sizeof *ne);
		if (!ne) {
			rc = -ENOMEM;
			break;
		}
		m->e = ne;
		memcpy(m->e + m->n, f->fm_extents, f->fm_mapped_extents * sizeof *ne);
		m->n += f->fm_mapped_extents;
		const struct fiemap_extent *x = &f->fm_extents[f->fm_mapped_extents - 1];
		last = (x->fe_flags & FIEMAP_EXTENT_LAST) != 0;
		start = x->fe_logical + x->fe_length;
	}
	free(f);
	if (rc) {
		free(m->e);
		m->e = NULL;
		m->n = 0;
	}
	return rc;
}

/* Where offset off of the file lies: *phys (UINT64_MAX in a hole), *end where that answer
 * stops holding. *i is a cursor into the map for offsets that only grow. 0 if unsure. */
static int cl_where(const struct cl_map *m, size_t *i, uint64_t off, uint64_t *phys,
		    uint64_t *end)
{
	while (*i < m->n && m->e[*i].fe_logical + m->e[*i].fe_length <= off)
		(*i)++;
	if (*i == m->n) {
		*phys = UINT64_MAX;
		*end = UINT64_MAX;
		return 1;
	}
	const struct fiemap_extent *x = &m->e[*i];
	if (off < x->fe_logical) {
		*phys = UINT64_MAX;
		*end = x->fe_logical;
		return 1;
	}
	if (x->fe_flags & CL_UNSURE)
		return 0;
	*phys = x->fe_physical + (off - x->fe_logical);
	*end = x->fe_logical + x->fe_length;
	return 1;
}

/* 1 if [off, end) lies in the same extents (or holes) in both files. */
static int cl_same(const struct cl_map *a, size_t *ia, const struct cl_map *b, size_t *ib,
		   uint64_t off, uint64_t end)
{
	while (off < end) {
		uint64_t pa, pb, ea, eb;
		if (!cl_where(a, ia, off, &pa, &ea) || !cl_where(b, ib, off, &pb, &eb) || pa != pb)
			return 0;
		off = ea < eb ? ea : eb;
	}
	return 1;
}

int cl_adopt(int clone, int ref, struct dd_blocks *b)
{
	struct stat cs, rs;
	struct cl_map cm = { 0 }, rm = { 0 };
	int rc = 0;
	if (fstat(clone, &cs) < 0 || fstat(ref, &rs) < 0) {
		rc = -errno;
		goto out;
	}
	if ((uint64_t)rs.st_size != b->size) {
		rc = -ESTALE; /* b does not describe ref: trust nothing */
		goto out;
	}
	uint64_t len = (uint64_t)cs.st_size;
	rc = dd_resize(b, len);
	if (!rc)
		rc = cl_map_read(clone, len, 1, &cm);
	if (!rc)
		rc = cl_map_read(ref, len, 1, &rm);
	if (rc)
		goto out;
	size_t ia = 0, ib = 0;
	for (size_t i = 0; i < b->n; i++) {
		uint64_t off = (uint64_t)i * DD_BLOCK;
		uint64_t end = off + DD_BLOCK < len ? off + DD_BLOCK : len;
		if (b->valid[i] && !cl_same(&cm, &ia, &rm, &ib, off, end))
			b->valid[i] = 0;
	}
out:
	free(cm.e);
	free(rm.e);
	if (rc && fstat(clone, &cs) == 0)
		(void)dd_reset(b, (uint64_t)cs.st_size); /* on failure b is empty: the caller's turn */
	return rc;
}

int cl_map_sig(int fd, uint64_t size, int sync, uint64_t *sig)
{
	struct cl_map m;
	int rc = cl_map_read(fd, size, sync, &m);
	if (rc)
		return rc;
	/* Runs of bytes that lie contiguously on disk, within [0, size), each as (logical,
	 * physical, length), unwritten or not: how the file system happens to cut a run into
	 * extents, and whether they are shared, change without the bytes changing. An extent
	 * whose physical address means nothing (delayed allocation) counts as an address of its
	 * own: the fingerprint moves when it is allocated, which only costs a copy. */
	struct sha256 h;
	sha256_init(&h);
	uint64_t run[3] = { 0, 0, 0 };
	for (size_t i = 0; i <= m.n; i++) {
		uint64_t lo = 0, ph = 0, len = 0;
		if (i < m.n) {
			const struct fiemap_extent *x = &m.e[i];
			lo = x->fe_logical;
			len = x->fe_length;
			if (lo >= size)
				continue;
			if (len > size - lo)
				len = size - lo;
			ph = x->fe_flags & CL_UNSURE & ~FIEMAP_EXTENT_UNWRITTEN ? UINT64_MAX
										  : x->fe_physical;
			/* An unwritten extent reads as zeros, whatever its blocks hold: a
			 * write in place elsewhere (below) may leave the same blocks behind */
			if (ph != UINT64_MAX && (x->fe_flags & FIEMAP_EXTENT_UNWRITTEN))
				ph |= (uint64_t)1 << 63;
			if (run[2] && ph != UINT64_MAX && run[0] + run[2] == lo &&
			    run[1] + run[2] == ph) {
				run[2] += len;
				continue;
			}
		}
		if (run[2])
			sha256_update(&h, run, sizeof run);
		run[0] = lo;
		run[1] = ph;
		run[2] = len;
	}
	free(m.e);
	uint8_t d[32];
	sha256_final(&h, d);
	memcpy(sig, d, sizeof *sig);
	*sig |= 1; /* never 0, which means "none" to the caller */
	return 0;
}
