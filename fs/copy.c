/* File copy with holes kept and the content digest computed in the same pass. */
#include "copy.h"
#include "sha256.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static uint8_t cp_zero_block_digest[32];
static const uint8_t *cp_zeros;
static pthread_once_t cp_once = PTHREAD_ONCE_INIT;

static void cp_init_once(void)
{
	/* calloc of a large block maps zero pages: no real memory is used for it. */
	cp_zeros = calloc(1, CP_BLOCK);
	if (cp_zeros)
		sha256(cp_zeros, CP_BLOCK, cp_zero_block_digest);
}

static int cp_all_zero(const uint8_t *p, size_t n)
{
	/* Checking the first bytes by hand lets memcmp run over the rest against itself. */
	if (n == 0)
		return 1;
	for (size_t i = 0; i < n && i < 16; i++)
		if (p[i])
			return 0;
	return memcmp(p, p + 1, n - 1) == 0;
}

/* On a copy from the page cache SHA-256 costs more than the copy itself, so blocks are hashed
 * by a small pool of threads while this thread reads and writes the next ones. Each block's
 * digest lands in its slot; slots are recycled in order, and the outer digest is fed in that
 * order, so the result does not depend on which thread hashed what. One copy at a time uses
 * the pool; a concurrent one hashes inline. */
#define CP_SLOTS 8
#define CP_HASHERS 2

enum { SLOT_FREE, SLOT_READY, SLOT_BUSY, SLOT_DONE };

/* A piece of work of the in-kernel copy: the digests of blocks [first, first + n). */
struct cp_job {
	uint64_t first, n;
	size_t last_len;   /* bytes in block first + n - 1 */
	uint64_t punched;  /* result: bytes of copied zero pages made holes */
};
struct cp_cfr;

struct cp_slot {
	uint8_t *buf;
	size_t len;
	int zero;
	int state;
	uint8_t digest[32];
};

struct cp_pipe {
	int threaded, hash;
	struct cp_slot slot[CP_SLOTS];
	unsigned head, fed;  /* next slot to fill; next slot whose digest goes into the outer */
	struct sha256 outer;
	uint8_t first[32];
	uint64_t blocks;
};

static struct {
	pthread_once_t once;
	pthread_mutex_t mu;
	pthread_cond_t work, done;
	pthread_mutex_t user;   /* held by the one copy that uses the pool */
	struct cp_pipe *pipe;
	struct cp_cfr *cfr;       /* the in-kernel copy whose blocks are being hashed, if any */
	int started;
	uint8_t *bufs[CP_SLOTS];  /* kept for the process: fresh 1 MiB buffers per file fault */
} cp_pool = { PTHREAD_ONCE_INIT, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
	      PTHREAD_COND_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, NULL, NULL, 0, { NULL } };

/* The buffer of copies that hash inline, one per thread, kept for the same reason. */
static __thread uint8_t *cp_inline_buf;

static void cp_slot_digest(struct cp_slot *sl)
{
	if (sl->zero && sl->len == CP_BLOCK)
		memcpy(sl->digest, cp_zero_block_digest, 32);
	else
		sha256(sl->zero ? cp_zeros : sl->buf, sl->len, sl->digest);
}

static int cp_cfr_take(struct cp_cfr *x, struct cp_job *j);
static void cp_cfr_run(struct cp_cfr *x, struct cp_job *j);
static void cp_cfr_ran(struct cp_cfr *x, const struct cp_job *j);

static void *cp_hasher(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&cp_pool.mu);
	for (;;) {
		struct cp_cfr *x = cp_pool.cfr;
		struct cp_job j;
		if (x && cp_cfr_take(x, &j)) {
			pthread_mutex_unlock(&cp_pool.mu);
			cp_cfr_run(x, &j);
			pthread_mutex_lock(&cp_pool.mu);
			cp_cfr_ran(x, &j);
			continue;
		}
		struct cp_pipe *p = cp_pool.pipe;
		struct cp_slot *sl = NULL;
		for (unsigned i = 0; p && i < CP_SLOTS && !sl; i++)
			if (p->slot[i].state == SLOT_READY)
				sl = &p->slot[i];
		if (!sl) {
			pthread_cond_wait(&cp_pool.work, &cp_pool.mu);
			continue;
		}
		sl->state = SLOT_BUSY;
		pthread_mutex_unlock(&cp_pool.mu);
		cp_slot_digest(sl);
		pthread_mutex_lock(&cp_pool.mu);
		sl->state = SLOT_DONE;
		pthread_cond_broadcast(&cp_pool.done);
	}
	return NULL;
}

static void cp_pool_init(void)
{
	sigset_t all, old;
	for (int i = 0; i < CP_SLOTS; i++)
		if (!(cp_pool.bufs[i] = malloc(CP_BLOCK)))
			return; /* no pool: copies hash inline */
	/* The hashers must never take a signal meant for the process (stillctl's SIGINT). */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (int i = 0; i < CP_HASHERS; i++) {
		pthread_t th;
		if (pthread_create(&th, NULL, cp_hasher, NULL) == 0) {
			pthread_detach(th);
			cp_pool.started++;
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static int cp_pipe_start(struct cp_pipe *p, int hash, int threaded)
{
	memset(p, 0, sizeof *p);
	p->hash = hash;
	sha256_init(&p->outer);
	if (threaded) {
		pthread_once(&cp_pool.once, cp_pool_init);
		threaded = cp_pool.started > 0 && pthread_mutex_trylock(&cp_pool.user) == 0;
	}
	if (threaded) {
		for (unsigned i = 0; i < CP_SLOTS; i++)
			p->slot[i].buf = cp_pool.bufs[i];
	} else {
		if (!cp_inline_buf && !(cp_inline_buf = malloc(CP_BLOCK)))
			return -ENOMEM;
		p->slot[0].buf = cp_inline_buf;
	}
	if (threaded) {
		p->threaded = 1;
		pthread_mutex_lock(&cp_pool.mu);
		cp_pool.pipe = p;
		pthread_mutex_unlock(&cp_pool.mu);
	}
	return 0;
}

static void cp_feed(struct cp_pipe *p, const uint8_t d[32])
{
	if (p->blocks++ == 0)
		memcpy(p->first, d, 32);
	sha256_update(&p->outer, d, 32);
}

/* Wait for the oldest outstanding slot and feed its digest. Called with cp_pool.mu held. */
static void cp_feed_oldest(struct cp_pipe *p)
{
	struct cp_slot *sl = &p->slot[p->fed % CP_SLOTS];
	while (sl->state != SLOT_DONE)
		pthread_cond_wait(&cp_pool.done, &cp_pool.mu);
	cp_feed(p, sl->digest);
	sl->state = SLOT_FREE;
	p->fed++;
}

/* The next free slot to fill. */
static struct cp_slot *cp_pipe_slot(struct cp_pipe *p)
{
	if (!p->threaded)
		return &p->slot[0];
	if (p->head - p->fed == CP_SLOTS) {
		pthread_mutex_lock(&cp_pool.mu);
		cp_feed_oldest(p);
		pthread_mutex_unlock(&cp_pool.mu);
	}
	return &p->slot[p->head % CP_SLOTS];
}

static void cp_pipe_submit(struct cp_pipe *p, struct cp_slot *sl)
{
	if (!p->hash)
		return;
	if (!p->threaded) {
		cp_slot_digest(sl);
		cp_feed(p, sl->digest);
		return;
	}
	pthread_mutex_lock(&cp_pool.mu);
	sl->state = SLOT_READY;
	p->head++;
	pthread_cond_signal(&cp_pool.work);
	pthread_mutex_unlock(&cp_pool.mu);
}

/* Wait for the hashers, write the digest (if wanted) and free everything. */
static void cp_pipe_finish(struct cp_pipe *p, uint8_t digest[32])
{
	if (p->threaded) {
		pthread_mutex_lock(&cp_pool.mu);
		while (p->fed != p->head)
			cp_feed_oldest(p);
		cp_pool.pipe = NULL;
		pthread_mutex_unlock(&cp_pool.mu);
		pthread_mutex_unlock(&cp_pool.user);
	}
	if (digest) {
		if (p->blocks == 0)
			sha256("", 0, digest);
		else if (p->blocks == 1)
			memcpy(digest, p->first, 32);
		else
			sha256_final(&p->outer, digest);
	}
}

/* Write the data of a block read at off, leaving its all-zero pages as holes: the scattered
 * data pages of a sparse file must not each cost a whole CP_BLOCK of disk. */
#define CP_PAGE 4096
static int cp_write_data(int fd, const uint8_t *p, size_t n, off_t off, uint64_t *written)
{
	size_t run = 0, i = 0; /* [run, i): data pages not written yet */
	while (i < n) {
		size_t len = n - i < CP_PAGE ? n - i : CP_PAGE;
		if (cp_all_zero(p + i, len)) {
			if (run < i) {
				int rc = ut_pwrite_all(fd, p + run, i - run, off + (off_t)run);
				if (rc)
					return rc;
				*written += i - run;
			}
			run = i + len;
		}
		i += len;
	}
	if (run < n) {
		int rc = ut_pwrite_all(fd, p + run, n - run, off + (off_t)run);
		if (rc)
			return rc;
		*written += n - run;
	}
	return 0;
}

/* Offset of the next data at or after off, or size if the rest is a hole. */
static uint64_t cp_next_data(int fd, uint64_t off, uint64_t size)
{
	off_t d = lseek(fd, (off_t)off, SEEK_DATA);
	if (d < 0)
		return errno == ENXIO ? size : off; /* no SEEK_DATA support: treat all as data */
	return (uint64_t)d;
}

/* Copy without hashing: in-kernel, data segments only. */
static int cp_kernel_copy(int src, int dst, uint64_t size, struct cp_result *r)
{
	uint64_t off = 0;
	while (off < size) {
		uint64_t data = cp_next_data(src, off, size);
		if (data >= size)
			break;
		off_t hole = lseek(src, (off_t)data, SEEK_HOLE);
		uint64_t end = hole < 0 ? size : (uint64_t)hole;
		if (end > size)
			end = size;
		off_t in = (off_t)data, out = (off_t)data;
		while ((uint64_t)in < end) {
			ssize_t n = copy_file_range(src, &in, dst, &out, end - (uint64_t)in, 0);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				return -errno;
			}
			if (n == 0) { /* source shrank under us */
				end = (uint64_t)in;
				size = end;
				break;
			}
			r->written += (uint64_t)n;
		}
		off = end;
	}
	r->size = size;
	return 0;
}


/* ---- in-kernel copy, hashing the private copy ----
 *
 * copy_file_range copies in the kernel (one memcpy per byte on a filesystem that cannot share
 * extents), and the copy's blocks are hashed through a read-only shared mapping of the
 * *destination*, so no byte goes through user space twice. The destination is private to us;
 * mapping the live source instead would let a writer's truncate kill us with SIGBUS. While
 * the next chunk is copied, the pool hashes the blocks already copied, up to 16 at a time in
 * vector lanes (sha256_many). Data is copied only where the source has data (SEEK_DATA), and
 * 4 KiB pages of copied zeros are punched out again as they are hashed, so holes and zero
 * pages stay holes as with the read/write copy, and `written` counts what is stored. */
#define CP_CHUNK ((uint64_t)8 << 20)    /* one copy_file_range request */
#define CP_JOB_MAX 16                    /* blocks per job: one 16-lane pass */
#define CP_CFR_MIN ((uint64_t)64 << 10)  /* smaller files: the read/write copy is as cheap */

struct cp_cfr {
	const uint8_t *map;      /* the destination, read-only */
	int fd;                  /* the destination, for punching holes */
	int punch;               /* punching holes works here */
	int threaded;
	uint64_t nblk;           /* blocks */
	size_t last_len;         /* bytes in the last block, once it is ready */
	uint8_t (*dig)[32];      /* each block's digest */
	uint32_t *got;           /* bytes copied into each block (the rest is a hole) */
	/* Under cp_pool.mu when threaded: blocks [0, ready) are copied, [0, sub) handed out,
	 * and `done` of them hashed. */
	uint64_t ready, sub, done;
	uint64_t punched;
};

/* Hand out the next ready blocks: as many as fill the vector lanes when enough are waiting,
 * else one (hashed with SHA-NI while the copy goes on). Called with cp_pool.mu held. */
static int cp_cfr_take(struct cp_cfr *x, struct cp_job *j)
{
	uint64_t avail = x->ready - x->sub, k = 1;
	if (avail == 0)
		return 0;
	if (avail >= SHA256_MANY_LANES16)
		k = avail < CP_JOB_MAX ? avail : CP_JOB_MAX;
	else if (avail >= SHA256_MANY_LANES8)
		k = avail < 8 ? avail : 8;
	j->first = x->sub;
	j->n = k;
	j->last_len = x->sub + k == x->nblk ? x->last_len : CP_BLOCK;
	j->punched = 0;
	x->sub += k;
	return 1;
}

/* Called with cp_pool.mu held. */
static void cp_cfr_ran(struct cp_cfr *x, const struct cp_job *j)
{
	x->punched += j->punched;
	x->done += j->n;
	if (x->done == x->sub) /* what cp_cfr_finish waits for */
		pthread_cond_broadcast(&cp_pool.done);
}

/* Punch a run of zero pages [off, off + len) that were copied; len may end in a partial page
 * at the end of the file, punched as far as its page end. Returns the bytes freed. */
static uint64_t cp_cfr_punch(struct cp_cfr *x, uint64_t off, uint64_t len)
{
	uint64_t span = (len + CP_PAGE - 1) / CP_PAGE * CP_PAGE;
	if (!__atomic_load_n(&x->punch, __ATOMIC_RELAXED) || len == 0)
		return 0;
	if (fallocate(x->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)span) == 0)
		return len;
	if (errno == EOPNOTSUPP || errno == ENOSYS)
		__atomic_store_n(&x->punch, 0, __ATOMIC_RELAXED);
	return 0; /* the zeros stay stored, and counted */
}

/* Block b, wholly copied: punch its zero pages. 1 if the whole block is zeros. */
static int cp_cfr_zeros(struct cp_cfr *x, uint64_t b, size_t len, uint64_t *punched)
{
	const uint8_t *p = x->map + b * CP_BLOCK;
	uint64_t base = b * CP_BLOCK;
	size_t run = 0, i = 0, zeros = 0; /* [run, i): zero pages not punched yet */
	for (; i < len; i += CP_PAGE) {
		size_t n = len - i < CP_PAGE ? len - i : CP_PAGE;
		if (cp_all_zero(p + i, n)) {
			zeros += n;
			continue;
		}
		if (run < i)
			*punched += cp_cfr_punch(x, base + run, i - run);
		run = i + CP_PAGE;
	}
	if (run < len)
		*punched += cp_cfr_punch(x, base + run, len - run);
	return zeros == len;
}

static void cp_cfr_run(struct cp_cfr *x, struct cp_job *j)
{
	const void *m[CP_JOB_MAX] = { NULL };
	uint64_t idx[CP_JOB_MAX];
	uint8_t out[CP_JOB_MAX][32];
	size_t k = 0;
	uint64_t punched = 0;

	for (uint64_t b = j->first; b < j->first + j->n; b++) {
		size_t len = b + 1 == j->first + j->n ? j->last_len : CP_BLOCK;
		if (x->got[b] == 0) { /* a hole in the source: never copied, never read */
			if (len == CP_BLOCK)
				memcpy(x->dig[b], cp_zero_block_digest, 32);
			else
				sha256(cp_zeros, len, x->dig[b]);
			continue;
		}
		/* Map the block's pages in one call rather than by a fault every 16 pages. */
		madvise((void *)(uintptr_t)(x->map + b * CP_BLOCK), len, MADV_POPULATE_READ);
		if (x->got[b] == len && cp_cfr_zeros(x, b, len, &punched)) {
			if (len == CP_BLOCK)
				memcpy(x->dig[b], cp_zero_block_digest, 32);
			else
				sha256(cp_zeros, len, x->dig[b]);
			continue;
		}
		if (len == CP_BLOCK) {
			m[k] = x->map + b * CP_BLOCK;
			idx[k++] = b;
		} else {
			sha256(x->map + b * CP_BLOCK, len, x->dig[b]);
		}
	}
	if (k)
		sha256_many(m, k, CP_BLOCK, out);
	for (size_t i = 0; i < k; i++)
		memcpy(x->dig[idx[i]], out[i], 32);
	j->punched = punched;
	/* Unmap the hashed pages (they stay in the page cache): otherwise a large file counts in
	 * full in our resident set while it is mapped. */
	madvise((void *)(uintptr_t)(x->map + j->first * CP_BLOCK),
		(size_t)((j->n - 1) * CP_BLOCK + j->last_len), MADV_DONTNEED);
}

/* Hash what is left, on this thread too, and wait for the pool's last blocks. */
static void cp_cfr_finish(struct cp_cfr *x)
{
	struct cp_job j;
	if (!x->threaded) {
		while (cp_cfr_take(x, &j)) {
			cp_cfr_run(x, &j);
			cp_cfr_ran(x, &j);
		}
		return;
	}
	pthread_mutex_lock(&cp_pool.mu);
	while (x->done < x->sub || x->sub < x->ready) {
		if (cp_cfr_take(x, &j)) {
			pthread_mutex_unlock(&cp_pool.mu);
			cp_cfr_run(x, &j);
			pthread_mutex_lock(&cp_pool.mu);
			cp_cfr_ran(x, &j);
		} else {
			pthread_cond_wait(&cp_pool.done, &cp_pool.mu);
		}
	}
	pthread_mutex_unlock(&cp_pool.mu);
}

/* Blocks wholly below `done` are ready to hash; all of them once done reaches size. */
static void cp_cfr_submit(struct cp_cfr *x, uint64_t done, uint64_t size)
{
	uint64_t ready = done >= size ? x->nblk : done / CP_BLOCK;
	if (ready == x->ready)
		return;
	if (!x->threaded) {
		x->ready = ready; /* hashed by cp_cfr_finish */
		return;
	}
	pthread_mutex_lock(&cp_pool.mu);
	x->ready = ready;
	pthread_cond_broadcast(&cp_pool.work);
	pthread_mutex_unlock(&cp_pool.mu);
}

/* Count bytes copied into [off, off + n) against their blocks. */
static void cp_cfr_got(struct cp_cfr *x, uint64_t off, uint64_t n)
{
	while (n > 0) {
		uint64_t b = off / CP_BLOCK, room = (b + 1) * CP_BLOCK - off;
		uint64_t take = n < room ? n : room;
		x->got[b] += (uint32_t)take;
		off += take;
		n -= take;
	}
}

/* 1 if the copy should go the read/write way instead (nothing of it is left in dst). */
#define CP_FALLBACK 1

/* Copy src (size bytes at the start) into the empty dst and digest it. 0, CP_FALLBACK, or
 * -errno. */
static int cp_cfr_file(int src, int dst, uint64_t size, struct cp_result *r)
{
	struct cp_cfr x;
	int rc = 0, rfd = dst;

	memset(&x, 0, sizeof x);
	int fl = fcntl(dst, F_GETFL);
	if (fl < 0)
		return -errno;
	if ((fl & O_ACCMODE) != O_RDWR) {
		/* A shared mapping needs a descriptor open for reading: open the same file again. */
		char path[64];
		snprintf(path, sizeof path, "/proc/self/fd/%d", dst);
		rfd = open(path, O_RDONLY | O_NOCTTY | O_CLOEXEC);
		if (rfd < 0)
			return CP_FALLBACK;
		struct stat a, b;
		if (fstat(rfd, &a) < 0 || fstat(dst, &b) < 0 || a.st_ino != b.st_ino ||
		    a.st_dev != b.st_dev) {
			close(rfd);
			return CP_FALLBACK;
		}
	}
	/* The whole size up front, so every page of the mapping is inside the file. */
	if (ftruncate(dst, (off_t)size) < 0) {
		rc = -errno;
		goto out_fd;
	}
	void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, rfd, 0);
	if (map == MAP_FAILED) {
		rc = CP_FALLBACK;
		goto out_fd;
	}
	x.map = map;
	x.fd = dst;
	x.punch = 1;
	x.nblk = (size + CP_BLOCK - 1) / CP_BLOCK;
	x.last_len = (size_t)(size - (x.nblk - 1) * CP_BLOCK);
	x.dig = malloc(x.nblk * sizeof *x.dig);
	x.got = calloc(x.nblk, sizeof *x.got);
	if (!x.dig || !x.got) {
		rc = -ENOMEM;
		goto out_map;
	}
	if (x.nblk > 1) {
		pthread_once(&cp_pool.once, cp_pool_init);
		x.threaded = cp_pool.started > 0 && pthread_mutex_trylock(&cp_pool.user) == 0;
	}
	if (x.threaded) {
		pthread_mutex_lock(&cp_pool.mu);
		cp_pool.cfr = &x;
		pthread_mutex_unlock(&cp_pool.mu);
	}

	uint64_t off = 0; /* everything below off is copied or known to be a hole */
	while (off < size && rc == 0) {
		uint64_t data = cp_next_data(src, off, size);
		if (data >= size)
			break;
		off_t hole = lseek(src, (off_t)data, SEEK_HOLE);
		uint64_t end = (uint64_t)hole;
		if (hole < 0 || end > size || end <= data)
			end = size;
		off = data;
		cp_cfr_submit(&x, off, size);
		while (off < end) {
			uint64_t want = end - off < CP_CHUNK ? end - off : CP_CHUNK;
			loff_t in = (loff_t)off, o = (loff_t)off;
			ssize_t n = copy_file_range(src, &in, dst, &o, (size_t)want, 0);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				rc = -errno;
				if (r->written == 0 && (rc == -EXDEV || rc == -EINVAL || rc == -ENOSYS ||
							rc == -EOPNOTSUPP))
					rc = CP_FALLBACK;
				break;
			}
			if (n == 0) { /* the source shrank under us: it ends here */
				size = off;
				break;
			}
			cp_cfr_got(&x, off, (uint64_t)n);
			r->written += (uint64_t)n;
			off += (uint64_t)n;
			cp_cfr_submit(&x, off, size);
		}
	}
	if (rc == 0) {
		/* What is left is a hole, or nothing if the source shrank (blocks handed out all
		 * lie below what was copied, so none is past the new end). */
		if (x.threaded)
			pthread_mutex_lock(&cp_pool.mu);
		x.nblk = (size + CP_BLOCK - 1) / CP_BLOCK;
		x.last_len = (size_t)(size - (x.nblk ? x.nblk - 1 : 0) * CP_BLOCK);
		if (x.threaded)
			pthread_mutex_unlock(&cp_pool.mu);
		cp_cfr_submit(&x, size, size);
	}
	if (rc) { /* stop handing out; wait for what was */
		if (x.threaded)
			pthread_mutex_lock(&cp_pool.mu);
		x.ready = x.sub;
		if (x.threaded)
			pthread_mutex_unlock(&cp_pool.mu);
	}
	cp_cfr_finish(&x);
	if (x.threaded) {
		pthread_mutex_lock(&cp_pool.mu);
		cp_pool.cfr = NULL;
		pthread_mutex_unlock(&cp_pool.mu);
		pthread_mutex_unlock(&cp_pool.user);
	}
	if (rc == 0) {
		r->size = size;
		r->written -= x.punched;
		if (x.nblk == 0)
			sha256("", 0, r->digest);
		else if (x.nblk == 1)
			memcpy(r->digest, x.dig[0], 32);
		else
			sha256(x.dig, x.nblk * 32, r->digest);
	}
out_map:
	munmap(map, size);
	free(x.dig);
	free(x.got);
out_fd:
	if (rfd != dst)
		close(rfd);
	if (rc == CP_FALLBACK && ftruncate(dst, 0) < 0)
		rc = -errno;
	return rc;
}

int cp_file(int src, int dst, int want_digest, struct cp_result *r)
{
	struct stat st;
	int rc = 0;

	pthread_once(&cp_once, cp_init_once);
	if (!cp_zeros)
		return -ENOMEM;
	memset(r, 0, sizeof *r);
	if (fstat(src, &st) < 0)
		return -errno;
	uint64_t size = (uint64_t)st.st_size;
	ssize_t hn = pread(src, r->head, sizeof r->head, 0);
	if (hn < 0)
		return -errno;

	if (dst >= 0 && size > 0 && ioctl(dst, FICLONE, src) == 0) {
		r->cloned = 1;
		r->size = size;
		if (!want_digest)
			return 0;
		dst = -1; /* content is shared; only the digest is left to do */
	}
	if (dst >= 0 && want_digest && size >= CP_CFR_MIN) {
		rc = cp_cfr_file(src, dst, size, r);
		if (rc != CP_FALLBACK)
			goto out_truncate;
		memset(r->digest, 0, sizeof r->digest);
		r->written = 0; /* fall back to the read/write loop below */
		rc = 0;
	}
	if (dst >= 0 && !want_digest) {
		rc = cp_kernel_copy(src, dst, size, r);
		if (rc == 0 || (rc != -EXDEV && rc != -EINVAL && rc != -ENOSYS && rc != -EOPNOTSUPP))
			goto out_truncate;
		r->written = 0; /* fall back to the read/write loop below */
	}

	struct cp_pipe p;
	rc = cp_pipe_start(&p, want_digest, want_digest && size > CP_BLOCK);
	if (rc)
		return rc;
	uint64_t off = 0, data = 0;
	while (off < size) {
		size_t n = (size_t)(size - off < CP_BLOCK ? size - off : CP_BLOCK);
		struct cp_slot *sl = cp_pipe_slot(&p);
		if (data < off + n && data <= off)
			data = cp_next_data(src, off, size);
		if (data >= off + n) { /* the whole block lies in a hole */
			sl->len = n;
			sl->zero = 1;
			cp_pipe_submit(&p, sl);
			off += n;
			continue;
		}
		ssize_t got = ut_pread_full(src, sl->buf, n, (off_t)off);
		if (got < 0) {
			rc = (int)got;
			break;
		}
		sl->len = (size_t)got;
		sl->zero = cp_all_zero(sl->buf, (size_t)got);
		if (dst >= 0 && !sl->zero) {
			rc = cp_write_data(dst, sl->buf, (size_t)got, (off_t)off, &r->written);
			if (rc)
				break;
		}
		if (got > 0)
			cp_pipe_submit(&p, sl);
		off += (uint64_t)got;
		if ((size_t)got < n) { /* source shrank under us */
			size = off;
			break;
		}
	}
	cp_pipe_finish(&p, want_digest && !rc ? r->digest : NULL);
	if (rc)
		return rc;
	r->size = size;
out_truncate:
	if (rc == 0 && dst >= 0 && ftruncate(dst, (off_t)r->size) < 0)
		rc = -errno;
	return rc;
}

int cp_patch(int src, int dst, uint64_t *written)
{
	struct stat st;
	int rc = 0;
	*written = 0;
	if (fstat(src, &st) < 0)
		return -errno;
	uint8_t *a = malloc(CP_BLOCK), *b = malloc(CP_BLOCK);
	if (!a || !b) {
		rc = -ENOMEM;
		goto out;
	}
	uint64_t size = (uint64_t)st.st_size;
	for (uint64_t off = 0; off < size;) {
		size_t n = (size_t)(size - off < CP_BLOCK ? size - off : CP_BLOCK);
		ssize_t got = ut_pread_full(src, a, n, (off_t)off);
		ssize_t had = got < 0 ? 0 : ut_pread_full(dst, b, (size_t)got, (off_t)off);
		if (got < 0 || had < 0) {
			rc = got < 0 ? (int)got : (int)had;
			goto out;
		}
		if (had != got || memcmp(a, b, (size_t)got)) {
			rc = ut_pwrite_all(dst, a, (size_t)got, (off_t)off);
			if (rc)
				goto out;
			*written += (uint64_t)got;
		}
		off += (uint64_t)got;
		if ((size_t)got < n) {
			size = off;
			break;
		}
	}
	if (ftruncate(dst, (off_t)size) < 0)
		rc = -errno;
out:
	free(a);
	free(b);
	return rc;
}

int cp_digest_fd(int fd, struct cp_result *r)
{
	return cp_file(fd, -1, 1, r);
}

int cp_rmtree(int dirfd, const char *name)
{
	if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* Without privilege a read-only directory cannot be emptied; it is going away anyway. */
	struct stat st;
	if (fstat(fd, &st) == 0 && (st.st_mode & S_IRWXU) != S_IRWXU)
		fchmod(fd, (st.st_mode & 07777) | S_IRWXU);
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	int rc = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		int r = cp_rmtree(fd, e->d_name);
		if (r && !rc)
			rc = r;
	}
	closedir(d);
	if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT && !rc)
		rc = -errno;
	return rc;
}

char *cp_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s);
	char *out = malloc(3 * n + 1), *p = out;
	if (!out)
		return NULL;
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (*c <= ' ' || *c >= 0x7f || *c == '%') {
			*p++ = '%';
			*p++ = hex[*c >> 4];
			*p++ = hex[*c & 15];
		} else {
			*p++ = (char)*c;
		}
	}
	*p = 0;
	return out;
}

static int cp_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

char *cp_unescape(const char *s)
{
	char *out = malloc(strlen(s) + 1), *p = out;
	if (!out)
		return NULL;
	while (*s) {
		if (*s == '%') {
			int hi = cp_hexval(s[1]), lo = hi < 0 ? -1 : cp_hexval(s[2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
				free(out);
				return NULL;
			}
			*p++ = (char)(hi << 4 | lo);
			s += 3;
		} else {
			*p++ = *s++;
		}
	}
	*p = 0;
	return out;
}
