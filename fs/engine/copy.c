/* SPDX-License-Identifier: GPL-2.0-or-later */
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
 * order, so the result does not depend on which thread hashed what. One read/write copy at a
 * time uses the slots; a concurrent one hashes inline. In-kernel copies (below) queue their
 * blocks for the same threads instead. */
#define CP_SLOTS 8
/* One hashing thread per CPU we may use (affinity, cgroup quota): the copying thread mostly
 * waits for the kernel's copy, so on 2 CPUs 2 hashers keep both busy. */
#define CP_HASHERS_MAX 16
unsigned cp_hashers(void)
{
	unsigned n = ut_cpu_count();
	return n > CP_HASHERS_MAX ? CP_HASHERS_MAX : n;
}

enum { SLOT_FREE, SLOT_READY, SLOT_BUSY, SLOT_DONE };

/* A piece of work for the hashers: blocks of in-kernel copies, from one copy or several. */
#define CP_JOB_MAX 16 /* blocks per job: one 16-lane pass */
struct cp_span {
	struct cp_pending *x;
	uint64_t first, n;  /* its blocks [first, first + n) */
	size_t last_len;    /* bytes in block first + n - 1 */
	uint64_t punched;   /* result: bytes of copied zero pages made holes */
};
struct cp_job {
	struct cp_span s[CP_JOB_MAX];
	unsigned ns;
};

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
	pthread_mutex_t user;   /* held by the one read/write copy that uses the slots */
	struct cp_pipe *pipe;
	/* In-kernel copies with blocks left to hash, oldest first (see cp_pending). */
	struct cp_pending *head, *tail;
	unsigned queued;        /* copies in the queue */
	unsigned waiters;       /* threads waiting for a digest */
	uint64_t avail;         /* blocks ready to hash and not handed out yet, over the queue */
	uint64_t backlog;       /* blocks ready to hash and not hashed yet */
	int started;
	uint8_t *bufs[CP_SLOTS];  /* kept for the process: fresh 1 MiB buffers per file fault */
} cp_pool = { .once = PTHREAD_ONCE_INIT, .mu = PTHREAD_MUTEX_INITIALIZER,
	      .work = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER,
	      .user = PTHREAD_MUTEX_INITIALIZER };

/* The buffer of copies that hash inline, one per thread, kept for the same reason. */
static __thread uint8_t *cp_inline_buf;

static void cp_slot_digest(struct cp_slot *sl)
{
	if (sl->zero && sl->len == CP_BLOCK)
		memcpy(sl->digest, cp_zero_block_digest, 32);
	else
		sha256(sl->zero ? cp_zeros : sl->buf, sl->len, sl->digest);
}

static int cp_take(struct cp_pending *want, int eager, struct cp_job *j);
static void cp_work(struct cp_job *j);

static void *cp_hasher(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&cp_pool.mu);
	for (;;) {
		struct cp_job j;
		/* More blocks are coming, of this copy or of the next: wait for enough to fill
		 * the lanes, unless someone is waiting for a digest. */
		if (cp_take(NULL, cp_pool.waiters > 0, &j)) {
			cp_work(&j);
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
	for (unsigned i = 0; i < cp_hashers(); i++) {
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
 * pages stay holes as with the read/write copy, and `written` counts what is stored.
 *
 * Copies with blocks left to hash wait in a queue, oldest first, and a job takes blocks from
 * the oldest copies that have some ready, several copies' blocks side by side in the lanes.
 * cp_file waits for its copy's digest at once; cp_file_deferred does not, so that the next
 * files are copied while this one is hashed, and a file of a few blocks no longer leaves the
 * lanes and the second core idle. Hashing later is sound because the copy is ours alone: the
 * digest is of the bytes that were copied. Until someone waits for a digest, the hashers take
 * only whole 16-lane passes: fewer blocks wait for the next copy's (a pass of 8 lanes costs
 * 0.7 of one of 16, SHA-NI a ninth per block). The queue is bounded (CP_QUEUE_MAX copies,
 * CP_BACKLOG_MAX blocks): past that, the copying thread hashes too before it copies more.
 * A copy holds no descriptor, only its mapping (holes are punched through it), which
 * whichever thread hashes its last block lets go of, with the outer digest computed. */
#define CP_CHUNK ((uint64_t)8 << 20)    /* one copy_file_range request */
#define CP_CFR_MIN ((uint64_t)64 << 10)  /* smaller files: the read/write copy is as cheap */
#define CP_QUEUE_MAX 64
#define CP_BACKLOG_MAX 256               /* blocks: 256 MiB copied and not hashed yet */

struct cp_pending {
	struct cp_pending *prev, *next;  /* in the queue while queued */
	const uint8_t *map;      /* the copy: mapped read-only, from a descriptor open for writing */
	size_t maplen;
	int punch;               /* punching holes works here */
	uint64_t nblk;           /* blocks */
	size_t last_len;         /* bytes in the last block, once it is ready */
	uint8_t (*dig)[32];      /* each block's digest */
	uint32_t *got;           /* bytes copied into each block (the rest is a hole) */
	uint64_t written;        /* bytes copied */
	uint8_t digest[32];      /* once finished, unless stopped */
	/* Under cp_pool.mu: blocks [0, ready) are copied, [0, sub) handed out, and `done` of them
	 * hashed. */
	uint64_t ready, sub, done;
	uint64_t punched;
	unsigned queued : 1, copying : 1;
	unsigned stopped : 1;    /* given up: no more blocks are handed out, no digest */
	unsigned finishing : 1;  /* a thread is finishing it; it holds no blocks to hash */
	unsigned finished : 1;   /* its digest is there and its resources are gone */
};

/* Take up to *k ready blocks of x into j. Called with cp_pool.mu held. */
static void cp_take_from(struct cp_pending *x, uint64_t *k, struct cp_job *j)
{
	uint64_t n = x->ready - x->sub;
	if (n > *k)
		n = *k;
	if (n == 0)
		return;
	struct cp_span *s = &j->s[j->ns++];
	s->x = x;
	s->first = x->sub;
	s->n = n;
	s->last_len = x->sub + n == x->nblk ? x->last_len : CP_BLOCK;
	s->punched = 0;
	x->sub += n;
	cp_pool.avail -= n;
	*k -= n;
}

/* Hand out the next ready blocks, of `want` first (if any) and then of the oldest copies: as
 * many as fill the vector lanes when enough are waiting. With fewer, only if eager: all of them
 * if they are worth a 16-lane pass, up to 8 if an 8-lane one, else one (hashed with SHA-NI
 * while other threads take the next). 1 if j got work. Called with cp_pool.mu held. */
static int cp_take(struct cp_pending *want, int eager, struct cp_job *j)
{
	uint64_t k = cp_pool.avail;
	if (k >= CP_JOB_MAX)
		k = CP_JOB_MAX;
	else if (!eager || k == 0)
		return 0;
	else if (k < SHA256_MANY_LANES8)
		k = 1;
	else if (k < SHA256_MANY_LANES16)
		k = k < 8 ? k : 8;
	j->ns = 0;
	if (want)
		cp_take_from(want, &k, j);
	for (struct cp_pending *x = cp_pool.head; x && k; x = x->next)
		if (x != want)
			cp_take_from(x, &k, j);
	return j->ns > 0;
}

static void cp_dequeue(struct cp_pending *x)
{
	if (!x->queued)
		return;
	if (x->prev)
		x->prev->next = x->next;
	else
		cp_pool.head = x->next;
	if (x->next)
		x->next->prev = x->prev;
	else
		cp_pool.tail = x->prev;
	x->prev = x->next = NULL;
	x->queued = 0;
	cp_pool.queued--;
}

/* 1 if nothing more will be hashed of x and nobody finishes it yet: the caller then must
 * (cp_finish). Called with cp_pool.mu held. */
static int cp_claim(struct cp_pending *x)
{
	if (x->copying || x->finishing || x->done != x->sub || (!x->stopped && x->sub != x->nblk))
		return 0;
	x->finishing = 1;
	cp_dequeue(x);
	return 1;
}

/* Finish a claimed copy: its digest (unless stopped) from the block digests, then let go of
 * the mapping and the descriptor. Called with cp_pool.mu held; drops it meanwhile. */
static void cp_finish(struct cp_pending *x)
{
	int stopped = x->stopped;
	pthread_mutex_unlock(&cp_pool.mu);
	if (stopped) /* nobody wants the digest */
		memset(x->digest, 0, 32);
	else if (x->nblk == 0)
		sha256("", 0, x->digest);
	else if (x->nblk == 1)
		memcpy(x->digest, x->dig[0], 32);
	else
		sha256(x->dig, x->nblk * 32, x->digest);
	munmap((void *)(uintptr_t)x->map, x->maplen);
	free(x->dig);
	free(x->got);
	x->map = NULL;
	x->dig = NULL;
	x->got = NULL;
	pthread_mutex_lock(&cp_pool.mu);
	x->finished = 1;
	pthread_cond_broadcast(&cp_pool.done);
}

/* Punch a run of zero pages [off, off + len) that were copied; len may end in a partial page
 * at the end of the file, punched as far as its page end. Returns the bytes freed. The punch
 * goes through the mapping (MADV_REMOVE is fallocate's PUNCH_HOLE on the file mapped, which
 * was opened for writing), so that a pending copy needs no descriptor. */
static uint64_t cp_cfr_punch(struct cp_pending *x, uint64_t off, uint64_t len)
{
	uint64_t span = (len + CP_PAGE - 1) / CP_PAGE * CP_PAGE;
	if (!__atomic_load_n(&x->punch, __ATOMIC_RELAXED) || len == 0)
		return 0;
	if (madvise((void *)(uintptr_t)(x->map + off), (size_t)span, MADV_REMOVE) == 0)
		return len;
	if (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL || errno == EACCES)
		__atomic_store_n(&x->punch, 0, __ATOMIC_RELAXED);
	return 0; /* the zeros stay stored, and counted */
}

/* Block b, wholly copied: punch its zero pages. 1 if the whole block is zeros. */
static int cp_cfr_zeros(struct cp_pending *x, uint64_t b, size_t len, uint64_t *punched)
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

/* Hash the blocks of a job, without cp_pool.mu: whole blocks side by side, whichever copies
 * they come from. */
static void cp_run(struct cp_job *j)
{
	const void *m[CP_JOB_MAX] = { NULL };
	uint8_t *to[CP_JOB_MAX];
	uint8_t out[CP_JOB_MAX][32];
	size_t k = 0;

	for (unsigned s = 0; s < j->ns; s++) {
		struct cp_span *sp = &j->s[s];
		struct cp_pending *x = sp->x;
		for (uint64_t b = sp->first; b < sp->first + sp->n; b++) {
			size_t len = b + 1 == sp->first + sp->n ? sp->last_len : CP_BLOCK;
			if (x->got[b] == 0) { /* a hole in the source: never copied, never read */
				if (len == CP_BLOCK)
					memcpy(x->dig[b], cp_zero_block_digest, 32);
				else
					sha256(cp_zeros, len, x->dig[b]);
				continue;
			}
			/* Map the block's pages in one call rather than by a fault every 16 pages. */
			madvise((void *)(uintptr_t)(x->map + b * CP_BLOCK), len, MADV_POPULATE_READ);
			if (x->got[b] == len && cp_cfr_zeros(x, b, len, &sp->punched)) {
				if (len == CP_BLOCK)
					memcpy(x->dig[b], cp_zero_block_digest, 32);
				else
					sha256(cp_zeros, len, x->dig[b]);
				continue;
			}
			if (len == CP_BLOCK) {
				m[k] = x->map + b * CP_BLOCK;
				to[k++] = x->dig[b];
			} else {
				sha256(x->map + b * CP_BLOCK, len, x->dig[b]);
			}
		}
	}
	if (k)
		sha256_many(m, k, CP_BLOCK, out);
	for (size_t i = 0; i < k; i++)
		memcpy(to[i], out[i], 32);
	/* Unmap the hashed pages (they stay in the page cache): otherwise a large file counts in
	 * full in our resident set while it is mapped. */
	for (unsigned s = 0; s < j->ns; s++) {
		struct cp_span *sp = &j->s[s];
		madvise((void *)(uintptr_t)(sp->x->map + sp->first * CP_BLOCK),
			(size_t)((sp->n - 1) * CP_BLOCK + sp->last_len), MADV_DONTNEED);
	}
}

/* Run a job taken under cp_pool.mu, which is dropped meanwhile and held again on return; the
 * copies it completes are finished by this thread. */
static void cp_work(struct cp_job *j)
{
	struct cp_pending *fin[CP_JOB_MAX];
	unsigned nfin = 0;
	pthread_mutex_unlock(&cp_pool.mu);
	cp_run(j);
	pthread_mutex_lock(&cp_pool.mu);
	for (unsigned s = 0; s < j->ns; s++) {
		struct cp_pending *x = j->s[s].x;
		x->punched += j->s[s].punched;
		x->done += j->s[s].n;
		cp_pool.backlog -= j->s[s].n;
		if (cp_claim(x))
			fin[nfin++] = x;
	}
	pthread_cond_broadcast(&cp_pool.done); /* for waiters and for cp_throttle */
	for (unsigned i = 0; i < nfin; i++)
		cp_finish(fin[i]);
}

/* Hash on this thread too while there is more copied and not hashed than the bounds allow.
 * Called with cp_pool.mu held. */
static void cp_throttle(unsigned max_queued)
{
	while (cp_pool.queued >= max_queued || cp_pool.backlog > CP_BACKLOG_MAX) {
		struct cp_job j;
		if (cp_take(NULL, 1, &j))
			cp_work(&j);
		else
			pthread_cond_wait(&cp_pool.done, &cp_pool.mu);
	}
}

/* Blocks [0, ready) of x are copied: the hashers may have them. Called with cp_pool.mu held. */
static void cp_cfr_ready(struct cp_pending *x, uint64_t ready)
{
	if (ready <= x->ready)
		return;
	cp_pool.avail += ready - x->ready;
	cp_pool.backlog += ready - x->ready;
	x->ready = ready;
	pthread_cond_broadcast(&cp_pool.work);
}

/* Blocks wholly below `done` are ready to hash; all of them once done reaches size. */
static void cp_cfr_submit(struct cp_pending *x, uint64_t done, uint64_t size)
{
	uint64_t ready = done >= size ? x->nblk : done / CP_BLOCK;
	if (ready == x->ready)
		return;
	pthread_mutex_lock(&cp_pool.mu);
	cp_cfr_ready(x, ready);
	cp_throttle(~0u);
	pthread_mutex_unlock(&cp_pool.mu);
}

/* No more blocks of x will be handed out; they are forgotten. Called with cp_pool.mu held. */
static void cp_cfr_stop(struct cp_pending *x)
{
	cp_pool.avail -= x->ready - x->sub;
	cp_pool.backlog -= x->ready - x->sub;
	x->ready = x->sub;
	x->stopped = 1;
}

/* The copy of x is over: with rc == 0 it is size bytes long, and the rest of its blocks are
 * ready; else it is given up. */
static void cp_cfr_copied(struct cp_pending *x, uint64_t size, int rc)
{
	pthread_mutex_lock(&cp_pool.mu);
	x->copying = 0;
	if (rc) {
		cp_cfr_stop(x);
	} else {
		/* What is left is a hole, or nothing if the source shrank (blocks handed out all
		 * lie below what was copied, so none is past the new end). */
		x->nblk = (size + CP_BLOCK - 1) / CP_BLOCK;
		x->last_len = (size_t)(size - (x->nblk ? x->nblk - 1 : 0) * CP_BLOCK);
		cp_cfr_ready(x, x->nblk);
	}
	if (cp_claim(x))
		cp_finish(x);
	pthread_mutex_unlock(&cp_pool.mu);
}

/* Wait until x is finished, hashing (its blocks first) on this thread too. Called with
 * cp_pool.mu held. */
static void cp_cfr_wait(struct cp_pending *x)
{
	cp_pool.waiters++;
	pthread_cond_broadcast(&cp_pool.work); /* the hashers take what there is, no more waiting */
	while (!x->finished) {
		struct cp_job j;
		if (!x->finishing && cp_take(x, 1, &j))
			cp_work(&j);
		else
			pthread_cond_wait(&cp_pool.done, &cp_pool.mu);
	}
	cp_pool.waiters--;
}

/* Our own read-write descriptor of dst into *fd: the mapping needs one open for reading, and
 * punching through it one open for writing. 0, CP_FALLBACK if there is none to be had, or
 * -errno. */
#define CP_FALLBACK 1 /* the copy should go the read/write way instead (nothing of it is in dst) */
static int cp_own_fd(int dst, int *fd)
{
	int fl = fcntl(dst, F_GETFL);
	if (fl < 0)
		return -errno;
	if ((fl & O_ACCMODE) == O_RDWR) {
		*fd = fcntl(dst, F_DUPFD_CLOEXEC, 0);
		return *fd < 0 ? -errno : 0;
	}
	/* The caller's is write-only: open the same file again. */
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", dst);
	*fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (*fd < 0)
		return CP_FALLBACK;
	struct stat a, b;
	if (fstat(*fd, &a) < 0 || fstat(dst, &b) < 0 || !ut_same_file(&a, &b)) {
		close(*fd);
		return CP_FALLBACK;
	}
	return 0;
}

/* Count bytes copied into [off, off + n) against their blocks. */
static void cp_cfr_got(struct cp_pending *x, uint64_t off, uint64_t n)
{
	while (n > 0) {
		uint64_t b = off / CP_BLOCK, room = (b + 1) * CP_BLOCK - off;
		uint64_t take = n < room ? n : room;
		x->got[b] += (uint32_t)take;
		off += take;
		n -= take;
	}
}

/* Copy the data of src into dst in the kernel, handing each chunk to the hashers as it lands.
 * *size drops if the source shrank. 0, CP_FALLBACK, or -errno. */
static int cp_cfr_copy(int src, int dst, struct cp_pending *x, uint64_t *size)
{
	uint64_t off = 0; /* everything below off is copied or known to be a hole */
	while (off < *size) {
		uint64_t data = cp_next_data(src, off, *size);
		if (data >= *size)
			break;
		off_t hole = lseek(src, (off_t)data, SEEK_HOLE);
		uint64_t end = (uint64_t)hole;
		if (hole < 0 || end > *size || end <= data)
			end = *size;
		off = data;
		cp_cfr_submit(x, off, *size);
		while (off < end) {
			uint64_t want = end - off < CP_CHUNK ? end - off : CP_CHUNK;
			loff_t in = (loff_t)off, o = (loff_t)off;
			ssize_t n = copy_file_range(src, &in, dst, &o, (size_t)want, 0);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				int rc = -errno;
				if (x->written == 0 && (rc == -EXDEV || rc == -EINVAL || rc == -ENOSYS ||
							rc == -EOPNOTSUPP))
					rc = CP_FALLBACK;
				return rc;
			}
			if (n == 0) { /* the source shrank under us: it ends here */
				*size = off;
				return 0;
			}
			cp_cfr_got(x, off, (uint64_t)n);
			x->written += (uint64_t)n;
			off += (uint64_t)n;
			cp_cfr_submit(x, off, *size);
		}
	}
	return 0;
}

/* Copy src (size bytes at the start) into the empty dst, and digest the copy: at once, or
 * (with pend) leaving the digest pending in *pend. 0, CP_FALLBACK, or -errno. */
static int cp_cfr_file(int src, int dst, uint64_t size, struct cp_result *r,
		       struct cp_pending **pend)
{
	int fd = -1, rc = cp_own_fd(dst, &fd);
	if (rc)
		return rc;
	/* The whole size up front, so every page of the mapping is inside the file. */
	if (ftruncate(dst, (off_t)size) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd); /* the mapping keeps the file, and the right to punch holes in it */
	struct cp_pending *x = calloc(1, sizeof *x);
	uint64_t nblk = (size + CP_BLOCK - 1) / CP_BLOCK;
	if (x) {
		x->dig = malloc(nblk * sizeof *x->dig);
		x->got = calloc(nblk, sizeof *x->got);
	}
	if (map == MAP_FAILED || !x || !x->dig || !x->got) {
		rc = map == MAP_FAILED ? CP_FALLBACK : -ENOMEM;
		if (map != MAP_FAILED)
			munmap(map, size);
		if (x) {
			free(x->dig);
			free(x->got);
		}
		free(x);
		goto out;
	}
	x->map = map;
	x->maplen = size;
	x->punch = 1;
	x->nblk = nblk;
	x->last_len = (size_t)(size - (nblk - 1) * CP_BLOCK);
	x->copying = 1;

	pthread_once(&cp_pool.once, cp_pool_init);
	pthread_mutex_lock(&cp_pool.mu);
	cp_throttle(CP_QUEUE_MAX);
	x->queued = 1;
	x->prev = cp_pool.tail;
	if (cp_pool.tail)
		cp_pool.tail->next = x;
	else
		cp_pool.head = x;
	cp_pool.tail = x;
	cp_pool.queued++;
	pthread_mutex_unlock(&cp_pool.mu);

	rc = cp_cfr_copy(src, dst, x, &size);
	r->written = x->written;
	cp_cfr_copied(x, size, rc);
	if (rc) {
		cp_pending_discard(x);
		goto out;
	}
	r->size = size;
	if (pend)
		*pend = x;
	else
		rc = cp_pending_wait(x, r);
out:
	if (rc == CP_FALLBACK && ftruncate(dst, 0) < 0)
		rc = -errno;
	return rc;
}

int cp_pending_wait(struct cp_pending *p, struct cp_result *r)
{
	pthread_mutex_lock(&cp_pool.mu);
	cp_cfr_wait(p);
	pthread_mutex_unlock(&cp_pool.mu);
	memcpy(r->digest, p->digest, 32);
	r->written = p->written - p->punched;
	free(p);
	return 0;
}

void cp_pending_discard(struct cp_pending *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&cp_pool.mu);
	if (!p->finishing)
		cp_cfr_stop(p);
	/* Blocks already handed out are being hashed: wait for them (cp_work claims it then). */
	while (!p->finished) {
		if (cp_claim(p))
			cp_finish(p);
		else
			pthread_cond_wait(&cp_pool.done, &cp_pool.mu);
	}
	pthread_mutex_unlock(&cp_pool.mu);
	free(p);
}

/* cp_file, with the digest of an in-kernel copy left pending when pend is not NULL. */
static int cp_copy(int src, int dst, int want_digest, struct cp_result *r,
		   struct cp_pending **pend)
{
	struct stat st;
	int rc = 0;

	if (pend)
		*pend = NULL;
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

	int clone = -1;
	if (dst >= 0 && size > 0 && ioctl(dst, FICLONE, src) == 0) {
		r->cloned = 1;
		if (fstat(dst, &st) < 0)
			return -errno;
		size = (uint64_t)st.st_size;
		r->size = size;
		if (!want_digest)
			return 0;
		/* The content is shared; the digest is read from the clone, which is what the
		 * snapshot holds: the live file may have been given other bytes meanwhile
		 * without a write (its extents swapped out and back). */
		clone = src = dst;
		dst = -1;
	}
	if (dst >= 0 && want_digest && size >= CP_CFR_MIN) {
		rc = cp_cfr_file(src, dst, size, r, pend);
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
	/* A clone shares the live file's blocks but not its page cache: what hashing it read
	 * would double the file's cached bytes in memory. */
	if (clone >= 0)
		(void)posix_fadvise(clone, 0, 0, POSIX_FADV_DONTNEED);
	if (rc)
		return rc;
	r->size = size;
out_truncate:
	if (rc == 0 && dst >= 0 && ftruncate(dst, (off_t)r->size) < 0)
		rc = -errno;
	if (rc && pend && *pend) {
		cp_pending_discard(*pend);
		*pend = NULL;
	}
	return rc;
}

int cp_file(int src, int dst, int want_digest, struct cp_result *r)
{
	return cp_copy(src, dst, want_digest, r, NULL);
}

int cp_file_deferred(int src, int dst, struct cp_result *r, struct cp_pending **out)
{
	return cp_copy(src, dst, 1, r, out);
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

/* ---- digest of a file (verify) ------------------------------------------------------------
 * A large file without holes is read 16 blocks at a time, which are hashed side by side
 * (sha256_many), on cp_hashers() threads that each take the next 16 blocks: about twice as fast
 * as the block-at-a-time pipe of cp_file. Files with holes keep that pipe, which hashes a hole
 * without reading it. */
#define CP_DG_BATCH 16

struct cp_dg {
	int fd;
	uint64_t size, nblk;
	uint8_t (*dig)[32];
	pthread_mutex_t mu;
	uint64_t next;          /* first block not handed out */
	int err;                /* -errno, or -EAGAIN: the file read short */
};

static void *cp_dg_worker(void *arg)
{
	struct cp_dg *g = arg;
	uint8_t *buf = malloc(CP_DG_BATCH * CP_BLOCK);
	for (;;) {
		pthread_mutex_lock(&g->mu);
		uint64_t b = g->next;
		if (!buf && !g->err)
			g->err = -ENOMEM;
		int stop = g->err || b >= g->nblk;
		g->next += stop ? 0 : CP_DG_BATCH;
		pthread_mutex_unlock(&g->mu);
		if (stop)
			break;
		uint64_t off = b * CP_BLOCK;
		size_t len = (size_t)(g->size - off < CP_DG_BATCH * CP_BLOCK ? g->size - off
									       : CP_DG_BATCH * CP_BLOCK);
		ssize_t got = ut_pread_full(g->fd, buf, len, (off_t)off);
		if (got < 0 || (size_t)got < len) {
			pthread_mutex_lock(&g->mu);
			if (!g->err)
				g->err = got < 0 ? (int)got : -EAGAIN;
			pthread_mutex_unlock(&g->mu);
			break;
		}
		const void *msgs[CP_DG_BATCH];
		size_t full = len / CP_BLOCK;
		for (size_t i = 0; i < full; i++)
			msgs[i] = buf + i * CP_BLOCK;
		sha256_many(msgs, full, CP_BLOCK, &g->dig[b]);
		if (full * CP_BLOCK < len)
			sha256(buf + full * CP_BLOCK, len - full * CP_BLOCK, g->dig[b + full]);
	}
	free(buf);
	return NULL;
}

/* 0 with r->size, r->head and r->digest set, CP_FALLBACK if the pipe should do it, or
 * -errno. */
static int cp_digest_batched(int fd, struct cp_result *r)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	uint64_t size = (uint64_t)st.st_size;
	if (!S_ISREG(st.st_mode) || size <= 2 * CP_BLOCK || lseek(fd, 0, SEEK_HOLE) != (off_t)size)
		return CP_FALLBACK;
	struct cp_dg g = { .fd = fd, .size = size, .nblk = (size + CP_BLOCK - 1) / CP_BLOCK };
	if (!(g.dig = malloc(g.nblk * 32)))
		return -ENOMEM;
	pthread_mutex_init(&g.mu, NULL);
	pthread_t th[CP_HASHERS_MAX];
	unsigned started = 0;
	sigset_t all, old;
	sigfillset(&all); /* helpers must never take a signal meant for the process */
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (unsigned t = 1; t < cp_hashers() && g.nblk > CP_DG_BATCH; t++)
		if (pthread_create(&th[started], NULL, cp_dg_worker, &g) == 0)
			started++;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	cp_dg_worker(&g);
	for (unsigned t = 0; t < started; t++)
		pthread_join(th[t], NULL);
	pthread_mutex_destroy(&g.mu);
	int rc = g.err;
	/* A file that changed size meanwhile is hashed again, the way files with holes are. */
	if (!rc && (fstat(fd, &st) < 0 || (uint64_t)st.st_size != size))
		rc = -EAGAIN;
	if (!rc && pread(fd, r->head, sizeof r->head, 0) < 0)
		rc = -errno;
	if (!rc) {
		sha256(g.dig, (size_t)g.nblk * 32, r->digest);
		r->size = size;
	}
	free(g.dig);
	return rc == -EAGAIN ? CP_FALLBACK : rc;
}

int cp_digest_fd(int fd, struct cp_result *r)
{
	memset(r, 0, sizeof *r);
	int rc = cp_digest_batched(fd, r);
	return rc == CP_FALLBACK ? cp_file(fd, -1, 1, r) : rc;
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
