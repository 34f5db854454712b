/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Page-level database copies with per-block digests (see dbdelta.h). */
#include "dbdelta.h"
#include "sha256.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define DD_PAGE 4096
#define DD_CHUNK (8 * DD_BLOCK) /* kernel copies go this far ahead of the readers */
#define DD_MAX_THREADS 16

void dd_init(struct dd_blocks *b)
{
	memset(b, 0, sizeof *b);
}

void dd_free(struct dd_blocks *b)
{
	free(b->d);
	free(b->valid);
	dd_init(b);
}

static size_t dd_nblocks(uint64_t size)
{
	return (size_t)((size + DD_BLOCK - 1) / DD_BLOCK);
}

int dd_reset(struct dd_blocks *b, uint64_t size)
{
	dd_free(b);
	size_t n = dd_nblocks(size);
	b->d = calloc(n + 1, 32);
	b->valid = calloc(n + 1, 1);
	if (!b->d || !b->valid) {
		dd_free(b);
		return -ENOMEM;
	}
	b->size = size;
	b->n = n;
	return 0;
}

int dd_resize(struct dd_blocks *b, uint64_t size)
{
	if (size == b->size)
		return 0;
	size_t n = dd_nblocks(size);
	if (n > b->n) {
		uint8_t (*d)[32] = realloc(b->d, (n + 1) * 32);
		if (d)
			b->d = d;
		uint8_t *v = d ? realloc(b->valid, n + 1) : NULL;
		if (!v)
			return -ENOMEM;
		b->valid = v;
		memset(b->valid + b->n, 0, n - b->n);
	}
	/* The block holding the old end and the one holding the new end change extent. */
	if (b->size % DD_BLOCK && b->size / DD_BLOCK < n)
		b->valid[b->size / DD_BLOCK] = 0;
	if (size % DD_BLOCK)
		b->valid[size / DD_BLOCK] = 0;
	b->n = n;
	b->size = size;
	return 0;
}

void dd_invalidate(struct dd_blocks *b, uint64_t off, uint64_t len)
{
	for (uint64_t i = off / DD_BLOCK; len && i < b->n && i * DD_BLOCK < off + len; i++)
		b->valid[i] = 0;
}

int dd_all_valid(const struct dd_blocks *b)
{
	if (!b->valid)
		return b->n == 0 && b->size == 0;
	for (size_t i = 0; i < b->n; i++)
		if (!b->valid[i])
			return 0;
	return 1;
}

void dd_digest(const struct dd_blocks *b, uint8_t out[32])
{
	if (b->n == 0)
		sha256("", 0, out);
	else if (b->n == 1)
		memcpy(out, b->d[0], 32);
	else
		sha256(b->d, b->n * 32, out);
}

/* ---- the workers ------------------------------------------------------------------------ */

enum { DD_HASH, DD_CMP };

struct dd_job {
	int mode;
	int src, dst;
	const uint8_t *map;       /* dst, mapped for `len` bytes */
	const uint8_t *smap;      /* src (live) mapped for `len` bytes to compare, or NULL */
	uint64_t len;
	int premapped;            /* map and smap are a dd_premap's: left mapped */
	struct dd_blocks *b;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t avail;           /* bytes of dst that hold what they should before the work */
	int copying;              /* avail still grows */
	size_t next;              /* next block to take */
	int err;
	uint64_t written, pages;
	double cpu_s;             /* of the helper threads */
	uint64_t faults;
};

/* This thread's CPU time and page faults so far. */
static void dd_usage(double *cpu_s, uint64_t *faults)
{
	struct timespec t;
	struct rusage ru;
	*cpu_s = clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t) == 0 ? t.tv_sec + t.tv_nsec / 1e9 : 0;
	*faults = getrusage(RUSAGE_THREAD, &ru) == 0 ? (uint64_t)(ru.ru_minflt + ru.ru_majflt) : 0;
}

static void dd_fail(struct dd_job *j, int rc)
{
	pthread_mutex_lock(&j->mu);
	if (!j->err)
		j->err = rc;
	pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&j->mu);
}

/* ---- reading the live file through a mapping ----------------------------------------------
 *
 * The compare reads the live file through a mapping: pread would copy every byte into a buffer
 * first, which was a third of an incremental capture. A writer may truncate the file while we
 * read it; touching a page past its new end raises SIGBUS. The thread that reads a block marks
 * the range it is reading (dd_guard); the handler jumps back out of a fault in that range, and
 * the block is read again with pread, which tells a truncation (-EAGAIN, as before) from an
 * I/O error. Any other SIGBUS gets the action that was there before us, and the mapping is not
 * used again. */

struct dd_guard {
	sigjmp_buf jb;
	const uint8_t *lo, *hi;
};

static __thread struct dd_guard *volatile dd_guarded;
static __thread volatile sig_atomic_t dd_zf_depth, dd_zf_hit; /* nested begins; a fault filled */
static uintptr_t dd_pagesz;
static struct sigaction dd_old_bus;
static pthread_once_t dd_bus_once = PTHREAD_ONCE_INIT;
static volatile sig_atomic_t dd_bus_ok;

static void dd_guard_set(struct dd_guard *g)
{
	dd_guarded = g;
	atomic_signal_fence(memory_order_seq_cst); /* no read of the mapping moves across */
}

static void dd_on_sigbus(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	struct dd_guard *g = dd_guarded;
	const uint8_t *a = si->si_addr;
	if (si->si_code > 0 && g && a >= g->lo && a < g->hi) /* > 0: a fault, not kill(2) */
		siglongjmp(g->jb, 1);
	if (si->si_code > 0 && dd_zf_depth > 0) {
		/* SQLite's mapping (dd_zerofill_begin): a page of zeros where the file ended, and
		 * the access runs again on it (mmap is a plain system call, safe here). */
		void *pg = (void *)((uintptr_t)a & ~(dd_pagesz - 1));
		if (mmap(pg, (size_t)dd_pagesz, PROT_READ, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS,
			 -1, 0) != MAP_FAILED) {
			dd_zf_hit = 1;
			return;
		}
	}
	/* Not ours: put back what was there. A fault runs its access again and gets that action;
	 * a signal someone sent is sent again (blocked until we return). */
	dd_bus_ok = 0;
	sigaction(sig, &dd_old_bus, NULL);
	if (si->si_code <= 0)
		raise(sig);
}

static void dd_bus_install(void)
{
	dd_pagesz = (uintptr_t)sysconf(_SC_PAGESIZE);
	struct sigaction sa = { .sa_sigaction = dd_on_sigbus, .sa_flags = SA_SIGINFO };
	sigemptyset(&sa.sa_mask);
	dd_bus_ok = sigaction(SIGBUS, &sa, &dd_old_bus) == 0;
}

/* Whether the live file may be read through a mapping on this thread: a SIGBUS it blocks
 * would kill the process instead of reaching the handler. */
static int dd_bus_usable(void)
{
	sigset_t cur;
	pthread_once(&dd_bus_once, dd_bus_install);
	return dd_bus_ok && pthread_sigmask(SIG_BLOCK, NULL, &cur) == 0 && !sigismember(&cur, SIGBUS);
}

int dd_zerofill_begin(void)
{
	if (!dd_bus_usable())
		return -1;
	if (!dd_zf_depth)
		dd_zf_hit = 0;
	dd_zf_depth++;
	atomic_signal_fence(memory_order_seq_cst);
	return 0;
}

int dd_zerofill_hit(void)
{
	atomic_signal_fence(memory_order_seq_cst);
	return dd_zf_hit != 0;
}

int dd_zerofill_end(void)
{
	int hit = dd_zerofill_hit();
	if (dd_zf_depth > 0)
		dd_zf_depth--;
	return hit;
}

/* Compare the n bytes s (block i of the live file) with dst and rewrite the pages that
 * differ. */
static int dd_cmp_pages(struct dd_job *j, size_t i, const uint8_t *s, size_t n,
			uint64_t *written, uint64_t *pages)
{
	uint64_t off = (uint64_t)i * DD_BLOCK;
	const uint8_t *m = j->map + off;
	if (!memcmp(s, m, n))
		return 0;
	size_t run = 0, p = 0; /* [run, p): differing pages not yet written */
	int changed = 0, rc = 0;
	for (; p < n && !rc; p += DD_PAGE) {
		size_t len = n - p < DD_PAGE ? n - p : DD_PAGE;
		if (!memcmp(s + p, m + p, len)) {
			if (run < p) {
				rc = ut_pwrite_all(j->dst, s + run, p - run, (off_t)(off + run));
				*written += rc ? 0 : p - run;
			}
			run = p + len;
			continue;
		}
		if (!changed) {
			changed = 1;
			j->b->valid[i] = 0; /* before the first write: b never claims too much */
		}
		(*pages)++;
	}
	if (!rc && run < n) {
		rc = ut_pwrite_all(j->dst, s + run, n - run, (off_t)(off + run));
		*written += rc ? 0 : n - run;
	}
	/* A write from a mapped page past a truncation fails in the kernel, not with SIGBUS. */
	return rc == -EFAULT && j->smap ? -EAGAIN : rc;
}

/* The same with block i read into *buf (allocated on first use: through a mapping, none is
 * needed): where the live file is not mapped, and after a fault in its mapping (a truncation
 * then reads short; an I/O error fails with its own errno). */
static int dd_cmp_read(struct dd_job *j, size_t i, size_t n, uint8_t **buf, uint64_t *written,
		       uint64_t *pages)
{
	if (!*buf && !(*buf = malloc(DD_BLOCK)))
		return -ENOMEM;
	ssize_t got = ut_pread_full(j->src, *buf, n, (off_t)((uint64_t)i * DD_BLOCK));
	if (got < 0)
		return (int)got;
	if ((size_t)got < n)
		return -EAGAIN; /* the live file shrank: the caller sees the change later */
	return dd_cmp_pages(j, i, *buf, n, written, pages);
}

/* The same through the mapping of the live file, guarded. */
static int dd_cmp_mapped(struct dd_job *j, size_t i, size_t n, uint8_t **buf, uint64_t *written,
			 uint64_t *pages)
{
	struct dd_guard g;
	const uint8_t *s = j->smap + (uint64_t)i * DD_BLOCK;
	g.lo = s;
	g.hi = s + n;
	if (sigsetjmp(g.jb, 1)) { /* 1: the mask the handler ran with is undone */
		dd_guard_set(NULL);
		return dd_cmp_read(j, i, n, buf, written, pages);
	}
	dd_guard_set(&g);
	int rc = dd_cmp_pages(j, i, s, n, written, pages);
	dd_guard_set(NULL);
	return rc;
}

/* Compare block i of src with dst and rewrite the pages that differ. */
static int dd_cmp_block(struct dd_job *j, size_t i, uint8_t **buf, uint64_t *written,
			uint64_t *pages)
{
	uint64_t off = (uint64_t)i * DD_BLOCK;
	size_t n = (size_t)(j->len - off < DD_BLOCK ? j->len - off : DD_BLOCK);
	return j->smap ? dd_cmp_mapped(j, i, n, buf, written, pages)
		       : dd_cmp_read(j, i, n, buf, written, pages);
}

#define DD_LANES 16

static uint64_t dd_min(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* Hash the invalid ones of the k blocks from block i: full blocks side by side
 * (sha256_many), a short last block alone. */
static void dd_hash_blocks(struct dd_job *j, size_t i, size_t k)
{
	const void *msgs[DD_LANES];
	size_t idx[DD_LANES], n = 0;
	uint8_t out[DD_LANES][32];

	for (size_t b = i; b < i + k; b++) {
		if (j->b->valid[b])
			continue;
		uint64_t off = (uint64_t)b * DD_BLOCK;
		if (j->len - off < DD_BLOCK) {
			sha256(j->map + off, (size_t)(j->len - off), j->b->d[b]);
			j->b->valid[b] = 1;
			continue;
		}
		msgs[n] = j->map + off;
		idx[n++] = b;
	}
	if (!n)
		return;
	sha256_many(msgs, n, DD_BLOCK, out);
	for (size_t x = 0; x < n; x++) {
		memcpy(j->b->d[idx[x]], out[x], 32);
		j->b->valid[idx[x]] = 1;
	}
}

static void *dd_worker(void *arg)
{
	struct dd_job *j = arg;
	uint8_t *buf = NULL;
	uint64_t written = 0, pages = 0;
	for (;;) {
		pthread_mutex_lock(&j->mu);
		/* Hashing while the copy goes on: wait until the next blocks fill the lanes, as
		 * the copy comes in chunks of half as many (8 lanes cost 0.7 of 16). */
		while (j->mode == DD_HASH && j->copying && !j->err && j->next < j->b->n &&
		       j->avail < dd_min(((uint64_t)j->next + DD_LANES) * DD_BLOCK, j->len))
			pthread_cond_wait(&j->cv, &j->mu);
		if (j->err || j->next >= j->b->n) {
			pthread_mutex_unlock(&j->mu);
			break;
		}
		size_t i = j->next++, k = 1;
		uint64_t end = ((uint64_t)i + 1) * DD_BLOCK;
		if (end > j->len)
			end = j->len;
		while (j->copying && j->avail < end && !j->err)
			pthread_cond_wait(&j->cv, &j->mu);
		/* Hashing: take the following blocks too, as many as are copied already, so that
		 * sha256_many can hash them side by side. */
		while (j->mode == DD_HASH && k < DD_LANES && j->next < j->b->n &&
		       (!j->copying || j->avail >= ((uint64_t)j->next + 1) * DD_BLOCK)) {
			j->next++;
			k++;
		}
		uint64_t last = ((uint64_t)(i + k)) * DD_BLOCK;
		if (last > j->len)
			last = j->len;
		int err = j->err;
		pthread_mutex_unlock(&j->mu);
		if (err)
			break;
		int rc = 0;
		if (j->mode == DD_HASH)
			dd_hash_blocks(j, i, k);
		else
			rc = dd_cmp_block(j, i, &buf, &written, &pages);
		/* Done with the blocks: drop them from our page tables (they stay in the page
		 * cache), or a 1 GiB database would count as 1 GiB of our resident memory. Not
		 * a dd_premap's, which are unmapped whole after the lock. */
		uint64_t off = (uint64_t)i * DD_BLOCK;
		if (j->map && !j->premapped)
			madvise((void *)(uintptr_t)(j->map + off), (size_t)(last - off), MADV_DONTNEED);
		if (j->smap && !j->premapped)
			madvise((void *)(uintptr_t)(j->smap + off), (size_t)(last - off), MADV_DONTNEED);
		if (rc) {
			dd_fail(j, rc);
			break;
		}
	}
	free(buf);
	pthread_mutex_lock(&j->mu);
	j->written += written;
	j->pages += pages;
	pthread_mutex_unlock(&j->mu);
	return NULL;
}

/* A helper thread: dd_worker, its CPU time and faults added to the job's. */
static void *dd_helper(void *arg)
{
	struct dd_job *j = arg;
	double c0, c1;
	uint64_t f0, f1;
	dd_usage(&c0, &f0);
	dd_worker(j);
	dd_usage(&c1, &f1);
	pthread_mutex_lock(&j->mu);
	j->cpu_s += c1 - c0;
	j->faults += f1 - f0;
	pthread_mutex_unlock(&j->mu);
	return NULL;
}

static void dd_progress(struct dd_job *j, uint64_t avail, int done)
{
	pthread_mutex_lock(&j->mu);
	j->avail = avail;
	if (done)
		j->copying = 0;
	pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&j->mu);
}

/* Copy [0, end) of from into dst at the same offsets, in the kernel if it can, reporting
 * progress. Returns 0, -EAGAIN if from ended early, or -errno. */
static int dd_copy_range(struct dd_job *j, int from, uint64_t end, uint64_t *written)
{
	off_t in = 0, out = 0;
	int kernel = 1;
	uint8_t *buf = NULL;
	int rc = 0;
	while ((uint64_t)in < end) {
		size_t want = (size_t)(end - (uint64_t)in < DD_CHUNK ? end - (uint64_t)in : DD_CHUNK);
		ssize_t n;
		if (kernel) {
			n = copy_file_range(from, &in, j->dst, &out, want, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
				      errno == EOPNOTSUPP) && in == 0) {
				kernel = 0; /* another filesystem: through user space */
				continue;
			}
			if (n < 0) {
				rc = -errno;
				break;
			}
		} else {
			if (!buf && !(buf = malloc(DD_BLOCK))) {
				rc = -ENOMEM;
				break;
			}
			n = ut_pread_full(from, buf, want < DD_BLOCK ? want : DD_BLOCK, in);
			if (n < 0) {
				rc = (int)n;
				break;
			}
			if (n > 0 && (rc = ut_pwrite_all(j->dst, buf, (size_t)n, in)))
				break;
			in += n;
			out += n;
		}
		if (n == 0) {
			rc = -EAGAIN;
			break;
		}
		*written += (uint64_t)n;
		dd_progress(j, (uint64_t)in, 0);
	}
	free(buf);
	return rc;
}

static unsigned dd_threads(unsigned t)
{
	return t < 1 ? 1 : t > DD_MAX_THREADS ? DD_MAX_THREADS : t;
}

/* Run the job: helpers work on blocks while this thread copies (if from >= 0, the range
 * [0, copy_end) of from into dst), then this thread works on blocks too. */
static int dd_run(struct dd_job *j, unsigned threads, int from, uint64_t copy_end,
		  uint64_t *copied)
{
	pthread_t th[DD_MAX_THREADS];
	unsigned started = 0;
	sigset_t all, old;
	pthread_mutex_init(&j->mu, NULL);
	pthread_cond_init(&j->cv, NULL);
	j->copying = from >= 0;
	j->avail = from >= 0 ? 0 : j->len;
	threads = dd_threads(threads);
	if (j->b->n > 1) {
		/* Helpers must never take a signal meant for the process (stillctl's SIGINT); a
		 * SIGBUS of their own they must take (dd_guard): a blocked one would kill us. */
		sigfillset(&all);
		sigdelset(&all, SIGBUS);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		for (unsigned t = 0; t + 1 < threads; t++)
			if (pthread_create(&th[started], NULL, dd_helper, j) == 0)
				started++;
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	if (from >= 0) {
		int rc = dd_copy_range(j, from, copy_end, copied);
		if (rc)
			dd_fail(j, rc);
		dd_progress(j, copy_end, 1);
	}
	dd_worker(j);
	for (unsigned t = 0; t < started; t++)
		pthread_join(th[t], NULL);
	pthread_cond_destroy(&j->cv);
	pthread_mutex_destroy(&j->mu);
	return j->err;
}

static const uint8_t *dd_map(int fd, uint64_t len, int advice)
{
	if (len == 0)
		return NULL;
	void *m = mmap(NULL, (size_t)len, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return MAP_FAILED;
	madvise(m, (size_t)len, advice);
	return m;
}

static void dd_unmap(const uint8_t *m, uint64_t len)
{
	if (m && m != MAP_FAILED)
		munmap((void *)m, (size_t)len);
}

int dd_copy(int src, int dst, int hash, unsigned threads, struct dd_blocks *b,
	    struct dd_result *r)
{
	struct stat st;
	memset(r, 0, sizeof *r);
	if (fstat(src, &st) < 0)
		return -errno;
	uint64_t len = (uint64_t)st.st_size;
	int rc = dd_reset(b, len);
	if (rc)
		return rc;
	/* Where the two can share extents, the copy is a clone: no data written. */
	int from = src;
	if (len > 0 && ioctl(dst, FICLONE, src) == 0) {
		r->cloned = 1;
		from = -1;
		if (fstat(dst, &st) < 0)
			return -errno;
		if ((uint64_t)st.st_size != len && (rc = dd_reset(b, (uint64_t)st.st_size)))
			return rc;
		len = (uint64_t)st.st_size;
	} else if (ftruncate(dst, (off_t)len) < 0) {
		return -errno;
	}
	struct dd_job j = { .mode = DD_HASH, .src = src, .dst = dst, .len = len, .b = b };
	if (!hash && from < 0)
		return 0;
	if (!hash) {
		j.b = &(struct dd_blocks){ 0 }; /* no blocks to work on: only the copy */
		rc = dd_run(&j, 1, src, len, &r->written);
		return rc;
	}
	j.map = dd_map(dst, len, MADV_SEQUENTIAL);
	if (j.map == MAP_FAILED)
		return -errno;
	rc = dd_run(&j, threads, from, len, &r->written);
	dd_unmap(j.map, len);
	return rc;
}

void dd_premap_init(struct dd_premap *p)
{
	memset(p, 0, sizeof *p);
}

void dd_premap_drop(struct dd_premap *p)
{
	dd_unmap(p->smap, p->slen);
	dd_unmap(p->dmap, p->dlen);
	dd_premap_init(p);
}

/* Map fd for len bytes and map in its pages up to its size now. */
static const uint8_t *dd_map_in(int fd, uint64_t size, uint64_t len)
{
	const uint8_t *m = dd_map(fd, len, MADV_NORMAL);
	/* Only an optimisation: a file shrunk meanwhile fails with EFAULT, an older kernel
	 * with EINVAL; the compare then faults the pages in itself. */
	if (m != MAP_FAILED && size)
		madvise((void *)(uintptr_t)m, (size_t)((size + DD_PAGE - 1) & ~(uint64_t)(DD_PAGE - 1)),
			MADV_POPULATE_READ);
	return m;
}

int dd_premap(int src, int dst, struct dd_premap *p)
{
	struct stat ss, ds;
	dd_premap_init(p);
	if (fstat(src, &ss) < 0 || fstat(dst, &ds) < 0)
		return -errno;
	if (ss.st_size == 0 || !dd_bus_usable())
		return -EINVAL;
	/* Room to grow by an eighth, and at least a chunk: its mapping is used only if the file
	 * is no longer than that under the lock. */
	uint64_t size = (uint64_t)ss.st_size, room = size + size / 8 + DD_CHUNK;
	room = (room + DD_PAGE - 1) & ~(uint64_t)(DD_PAGE - 1);
	p->smap = dd_map_in(src, size, room);
	p->dmap = p->smap == MAP_FAILED ? MAP_FAILED : dd_map_in(dst, (uint64_t)ds.st_size, room);
	if (p->smap == MAP_FAILED || p->dmap == MAP_FAILED) {
		int rc = -errno;
		p->smap = p->smap == MAP_FAILED ? NULL : p->smap;
		p->dmap = p->dmap == MAP_FAILED ? NULL : p->dmap;
		p->slen = p->dlen = room;
		dd_premap_drop(p);
		return rc;
	}
	p->slen = p->dlen = room;
	p->sdev = ss.st_dev;
	p->sino = ss.st_ino;
	p->ddev = ds.st_dev;
	p->dino = ds.st_ino;
	return 0;
}

static int dd_sync_with(int src, int dst, int base, unsigned threads, struct dd_blocks *b,
			const struct dd_premap *p, struct dd_result *r)
{
	struct stat st, dt = { 0 };
	double c0, c1;
	uint64_t f0, f1;
	memset(r, 0, sizeof *r);
	dd_usage(&c0, &f0);
	if (fstat(src, &st) < 0)
		return -errno;
	uint64_t len = (uint64_t)st.st_size, base_len = b->size;
	int from = -1;
	if (base >= 0) {
		if (base_len > 0 && ioctl(dst, FICLONE, base) == 0)
			r->cloned = 1;
		else
			from = base;
	} else {
		if (fstat(dst, &dt) < 0)
			return -errno;
		if ((uint64_t)dt.st_size != b->size) /* b must describe dst: trust nothing */
			dd_reset(b, (uint64_t)dt.st_size);
	}
	/* Not when the size is right: setting it is a metadata change the journal may wait on. */
	int rc = dd_resize(b, len);
	if (!rc && (base >= 0 || (uint64_t)dt.st_size != len) && ftruncate(dst, (off_t)len) < 0)
		rc = -errno;
	if (rc)
		return rc;
	struct dd_job j = { .mode = DD_CMP, .src = src, .dst = dst, .len = len, .b = b };
	if (p && p->smap && p->dmap && p->slen >= len && p->dlen >= len && p->sdev == st.st_dev &&
	    p->sino == st.st_ino && p->ddev == dt.st_dev && p->dino == dt.st_ino &&
	    dd_bus_usable()) {
		j.map = p->dmap;
		j.smap = p->smap;
		j.premapped = 1;
	} else {
		j.map = dd_map(dst, len, MADV_SEQUENTIAL);
		if (j.map == MAP_FAILED)
			return -errno;
		if (dd_bus_usable()) {
			/* Not MADV_SEQUENTIAL: that would tell the kernel to drop the live file's
			 * pages, which are the application's cache. No mapping (some filesystems):
			 * pread. */
			j.smap = dd_map(src, len, MADV_NORMAL);
			if (j.smap == MAP_FAILED)
				j.smap = NULL;
		}
	}
	uint64_t copied = 0;
	rc = dd_run(&j, threads, from, base_len < len ? base_len : len, &copied);
	/* A cut inside the last page reads as zeros through a mapping, where pread read short. */
	if (!rc && j.smap && fstat(src, &st) == 0 && (uint64_t)st.st_size < len)
		rc = -EAGAIN;
	if (!j.premapped) {
		dd_unmap(j.smap, len);
		dd_unmap(j.map, len);
	}
	r->written = copied + j.written;
	r->pages = j.pages;
	dd_usage(&c1, &f1);
	r->cpu_s = j.cpu_s + c1 - c0;
	r->faults = j.faults + f1 - f0;
	return rc;
}

int dd_sync(int src, int dst, int base, unsigned threads, struct dd_blocks *b,
	    struct dd_result *r)
{
	return dd_sync_with(src, dst, base, threads, b, NULL, r);
}

int dd_sync_premapped(int src, int dst, unsigned threads, struct dd_blocks *b,
		      const struct dd_premap *p, struct dd_result *r)
{
	return dd_sync_with(src, dst, -1, threads, b, p, r);
}

int dd_rehash(int fd, unsigned threads, struct dd_blocks *b)
{
	if (dd_all_valid(b))
		return 0;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size != b->size)
		return -ESTALE;
	struct dd_job j = { .mode = DD_HASH, .src = -1, .dst = fd, .len = b->size, .b = b };
	j.map = dd_map(fd, b->size, MADV_SEQUENTIAL);
	if (j.map == MAP_FAILED)
		return -errno;
	int rc = dd_run(&j, threads, -1, 0, NULL);
	dd_unmap(j.map, b->size);
	return rc;
}
