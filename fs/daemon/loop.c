/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The request loop: libfuse's multi-threaded loop, with a share of the threads per user.
 *
 * A request can wait in the daemon for as long as something outside it takes: a lock on a
 * store inode held by a process that is itself waiting for this daemon (a write from a page
 * mapped through the mount), a capture, a slow file system. libfuse's own loop gives every
 * request a thread up to max_threads, so one user who sends enough such requests takes them
 * all and the mount stops answering anyone, that user's own page reads included, for good.
 *
 * Here every worker thread reads requests from /dev/fuse as libfuse's do, but first reads the
 * request's header. Requests in three classes may run at once, at most:
 *   - the kernel's own (uid and pid 0: write-back of mapped pages), FORGET and INTERRUPT,
 *     and the capture helper's: every thread;
 *   - root's: all but LP_KERNEL_SPARE, so the class above always finds a thread;
 *   - any other user's: all but LP_ROOT_SPARE more, and LP_SHARE(threads) per user.
 * A request over its limit is parked, copied out of the worker's buffer, and run in arrival
 * order (per user; users in turn) by a worker that finishes one; it holds no thread
 * meanwhile, and ends with EINTR if its caller is interrupted (killed) before it runs. A user
 * who parks more than LP_PARK_MAX bytes gets EAGAIN for the next request.
 * A user who blocks all the threads of their share blocks only their own requests. */
#include "stillfs.h"

#include "util.h"

#include <errno.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#define LP_KERNEL_SPARE 2
#define LP_ROOT_SPARE 1
#define LP_SHARE(n) ((n) / 4 > 1 ? (n) / 4 : 1)
#define LP_PARK_MAX (64u << 20)

/* The kernel's request header (linux/fuse.h's struct fuse_in_header), and the opcodes that
 * need no answer or must never wait. */
struct lp_in_header {
	uint32_t len, opcode;
	uint64_t unique, nodeid;
	uint32_t uid, gid, pid;
	uint16_t total_extlen, padding;
};
enum { LP_OP_FORGET = 2, LP_OP_INTERRUPT = 36, LP_OP_BATCH_FORGET = 42 };
enum lp_class { LP_KERNEL, LP_ROOT, LP_USER };

struct lp_parked {
	struct lp_parked *next;
	size_t size;
	char mem[];
};

/* A user with requests running or parked. */
struct lp_user {
	struct lp_user *next;
	uid_t uid;
	unsigned running;
	size_t parked_bytes;
	struct lp_parked *head, *tail;
};

static struct {
	struct fuse_session *se;
	unsigned max, share;
	pthread_mutex_t mu;
	sem_t finish;
	pthread_t *threads;
	unsigned nthreads, receiving;
	unsigned running[3];          /* per class */
	struct lp_user *users;        /* users with requests running or parked */
	struct lp_user root_q;        /* root's parked requests */
	struct lp_user *turn;         /* the user whose parked request runs next, if it may */
	int error;
	unsigned long parked, refused;
} lp = { .mu = PTHREAD_MUTEX_INITIALIZER };

static enum lp_class lp_class_of(const struct lp_in_header *in)
{
	/* The kernel's write-back carries no caller: uid and pid 0. (A user's process that the
	 * daemon's pid namespace cannot see comes with pid 0 too, but with its own uid.) */
	if (in->opcode == LP_OP_FORGET || in->opcode == LP_OP_BATCH_FORGET ||
	    in->opcode == LP_OP_INTERRUPT || (in->uid == 0 && in->pid == 0) ||
	    (in->uid == 0 && hp_is_helper_pid((pid_t)in->pid)))
		return LP_KERNEL;
	return in->uid == 0 ? LP_ROOT : LP_USER;
}

static struct lp_user *lp_user_of(uid_t uid, int make)
{
	for (struct lp_user *u = lp.users; u; u = u->next)
		if (u->uid == uid)
			return u;
	if (!make)
		return NULL;
	struct lp_user *u = calloc(1, sizeof *u);
	if (u) {
		u->uid = uid;
		u->next = lp.users;
		lp.users = u;
	}
	return u;
}

static void lp_user_drop(struct lp_user *u)
{
	if (u->running || u->head)
		return;
	for (struct lp_user **p = &lp.users; *p; p = &(*p)->next)
		if (*p == u) {
			*p = u->next;
			break;
		}
	if (lp.turn == u)
		lp.turn = NULL;
	free(u);
}

/* With lp.mu held: may a request of class c (user u) run now? The kernel's always may: a
 * worker that reads one is free, and root's and the users' never take the last threads. */
static int lp_may_run(enum lp_class c, const struct lp_user *u)
{
	if (c == LP_KERNEL)
		return 1;
	if (lp.running[LP_ROOT] + lp.running[LP_USER] >= lp.max - LP_KERNEL_SPARE)
		return 0;
	return c == LP_ROOT || (lp.running[LP_USER] < lp.max - LP_KERNEL_SPARE - LP_ROOT_SPARE &&
				u->running < lp.share);
}

static void lp_begin(enum lp_class c, struct lp_user *u)
{
	lp.running[c]++;
	if (u)
		u->running++;
}

static void lp_end(enum lp_class c, struct lp_user *u)
{
	lp.running[c]--;
	if (u) {
		u->running--;
		lp_user_drop(u);
	}
}

/* With lp.mu held: a parked request that may run now, taken off its queue (class and user
 * set), or NULL. Root's first, then the users in turn. */
static struct lp_parked *lp_take(enum lp_class *c, struct lp_user **uout)
{
	struct lp_user *u = &lp.root_q;
	if (u->head && lp_may_run(LP_ROOT, NULL)) {
		*c = LP_ROOT;
		*uout = NULL;
	} else {
		struct lp_user *start = lp.turn ? lp.turn : lp.users, *i = start;
		u = NULL;
		while (i) {
			if (i->head && lp_may_run(LP_USER, i)) {
				u = i;
				break;
			}
			i = i->next ? i->next : lp.users;
			if (i == start)
				break;
		}
		if (!u)
			return NULL;
		*c = LP_USER;
		*uout = u;
		lp.turn = u->next;
	}
	struct lp_parked *p = u->head;
	u->head = p->next;
	if (!u->head)
		u->tail = NULL;
	u->parked_bytes -= p->size;
	return p;
}

/* Answer a request we will not run with error -err. */
static void lp_answer(uint64_t unique, int err)
{
	struct {
		uint32_t len;
		int32_t error;
		uint64_t unique;
	} out = { sizeof out, -err, unique };
	if (write(fuse_session_fd(lp.se), &out, sizeof out) < 0 && errno != ENOENT)
		log_warn("cannot answer a request: %s", strerror(errno));
}

/* With lp.mu held: take the parked request `unique` off its queue, or NULL. */
static struct lp_parked *lp_unpark(uint64_t unique)
{
	struct lp_user *u = &lp.root_q;
	for (struct lp_user *next = lp.users;; u = next, next = next ? next->next : NULL) {
		for (struct lp_parked **pp = &u->head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
			const struct lp_in_header *in = (const void *)(*pp)->mem;
			if (in->unique != unique)
				continue;
			struct lp_parked *p = *pp;
			*pp = p->next;
			if (u->tail == p)
				u->tail = prev;
			u->parked_bytes -= p->size;
			if (u != &lp.root_q)
				lp_user_drop(u);
			return p;
		}
		if (!next)
			return NULL;
	}
}

/* Park the request in buf for user u (root's queue when u is NULL). 0, or -1 if refused. */
static int lp_park(const struct fuse_buf *buf, struct lp_user *u)
{
	if (!u)
		u = &lp.root_q;
	struct lp_parked *p = NULL;
	if (u->parked_bytes + buf->size <= LP_PARK_MAX)
		p = malloc(sizeof *p + buf->size);
	if (!p) {
		if (lp.refused++ % 1000 == 0)
			log_warn("uid %u has %zu bytes of requests waiting for a thread: request "
				 "refused (EAGAIN; %lu so far)", (unsigned)u->uid, u->parked_bytes,
				 lp.refused);
		return -1;
	}
	p->next = NULL;
	p->size = buf->size;
	memcpy(p->mem, buf->mem, buf->size);
	if (u->tail)
		u->tail->next = p;
	else
		u->head = p;
	u->tail = p;
	u->parked_bytes += p->size;
	lp.parked++;
	return 0;
}

static void *lp_worker(void *arg);

/* With lp.mu held: one more worker if none is left to read requests. */
static void lp_spawn_if_needed(void)
{
	if (lp.receiving > 0 || lp.nthreads >= lp.max)
		return;
	/* The stop signals go to the main thread, which waits for them (lp_run). */
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	if (pthread_create(&lp.threads[lp.nthreads], NULL, lp_worker, NULL) == 0) {
		lp.nthreads++;
		lp.receiving++;        /* it reads as soon as it starts */
	} else {
		log_err("cannot start a request thread: %s", strerror(errno));
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Run the request in buf, then (unless forget: a FORGET frees no place of root's or a
 * user's) the parked ones that may run. */
static void lp_process(struct fuse_buf *buf, enum lp_class c, struct lp_user *u, int forget)
{
	fuse_session_process_buf(lp.se, buf);
	pthread_mutex_lock(&lp.mu);
	lp_end(c, u);
	struct lp_parked *p;
	while (!forget && (p = lp_take(&c, &u))) {
		lp_begin(c, u);
		pthread_mutex_unlock(&lp.mu);
		struct fuse_buf pb = { .size = p->size, .mem = p->mem };
		fuse_session_process_buf(lp.se, &pb);
		free(p);
		pthread_mutex_lock(&lp.mu);
		lp_end(c, u);
	}
	pthread_mutex_unlock(&lp.mu);
}

static void *lp_worker(void *arg)
{
	(void)arg;
	struct fuse_buf buf = { .mem = NULL };
	while (!fuse_session_exited(lp.se)) {
		pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
		int res = fuse_session_receive_buf(lp.se, &buf);
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
		if (res == -EINTR)
			continue;
		/* The kernel ends the connection with ENODEV at an unmount, or ECONNABORTED when
		 * it aborts the requests still queued (an unmount while many releases of a killed
		 * process are pending, or an abort through /sys/fs/fuse/connections): both end
		 * the session. */
		if (res == -ECONNABORTED) {
			fuse_session_exit(lp.se);
			res = 0;
		}
		if (res <= 0) {
			if (res < 0) {
				pthread_mutex_lock(&lp.mu);
				lp.error = res;
				pthread_mutex_unlock(&lp.mu);
				fuse_session_exit(lp.se);
			}
			break;
		}
		/* Not spliced (main.c turns FUSE_CAP_SPLICE_READ off): the request is in buf.mem. */
		const struct lp_in_header *in = buf.mem;
		enum lp_class c = buf.size >= sizeof *in ? lp_class_of(in) : LP_KERNEL;
		pthread_mutex_lock(&lp.mu);
		if (c == LP_KERNEL && in->opcode == LP_OP_INTERRUPT &&
		    buf.size >= sizeof *in + sizeof(uint64_t)) {
			/* A signal for a request still parked: it ends now, never run (a caller
			 * killed while its request waits for a thread can then exit). */
			uint64_t unique;
			memcpy(&unique, (const char *)buf.mem + sizeof *in, sizeof unique);
			struct lp_parked *p = lp_unpark(unique);
			pthread_mutex_unlock(&lp.mu);
			if (p) {
				lp_answer(unique, EINTR);
				free(p);
				continue;
			}
			pthread_mutex_lock(&lp.mu);
		}
		struct lp_user *u = c == LP_USER ? lp_user_of(in->uid, 1) : NULL;
		if (c == LP_USER && !u)
			c = LP_ROOT;          /* out of memory: at least root's limit holds */
		if (c != LP_KERNEL && (!lp_may_run(c, u) || (u ? u->head : lp.root_q.head))) {
			/* after those of the same user parked before it */
			int rc = lp_park(&buf, u);
			if (u && !u->head)
				lp_user_drop(u);
			pthread_mutex_unlock(&lp.mu);
			if (rc)
				lp_answer(in->unique, EAGAIN);
			continue;
		}
		lp_begin(c, u);
		/* A FORGET is answered at once, without a reply: a burst of them (the kernel
		 * pruning its inodes) must not start a thread each. */
		int forget = in->opcode == LP_OP_FORGET || in->opcode == LP_OP_BATCH_FORGET;
		if (!forget) {
			lp.receiving--;
			lp_spawn_if_needed();
		}
		pthread_mutex_unlock(&lp.mu);
		lp_process(&buf, c, u, forget);
		if (!forget) {
			pthread_mutex_lock(&lp.mu);
			lp.receiving++;
			pthread_mutex_unlock(&lp.mu);
		}
	}
	free(buf.mem);
	sem_post(&lp.finish);
	return NULL;
}

int lp_run(struct fuse_session *se, unsigned max_threads)
{
	lp.se = se;
	lp.max = max_threads;
	lp.share = LP_SHARE(max_threads);
	lp.root_q.uid = 0;
	if (sem_init(&lp.finish, 0, 0) || !(lp.threads = calloc(max_threads, sizeof *lp.threads)))
		return -ENOMEM;
	pthread_mutex_lock(&lp.mu);
	lp_spawn_if_needed();
	int started = lp.nthreads;
	pthread_mutex_unlock(&lp.mu);
	if (!started)
		return -EAGAIN;
	/* A stop signal sets the session's exit flag and interrupts this wait. */
	while (!fuse_session_exited(se))
		sem_wait(&lp.finish);
	pthread_mutex_lock(&lp.mu);
	unsigned n = lp.nthreads;
	pthread_mutex_unlock(&lp.mu);
	for (unsigned i = 0; i < n; i++)
		pthread_cancel(lp.threads[i]);
	for (unsigned i = 0; i < n; i++)
		pthread_join(lp.threads[i], NULL);
	free(lp.threads);
	sem_destroy(&lp.finish);
	struct lp_parked *p;
	while (lp.root_q.head) {
		p = lp.root_q.head;
		lp.root_q.head = p->next;
		free(p);
	}
	while (lp.users) {
		struct lp_user *u = lp.users;
		lp.users = u->next;
		while ((p = u->head)) {
			u->head = p->next;
			free(p);
		}
		free(u);
	}
	fuse_session_reset(se);
	return lp.error;
}

void lp_report(FILE *f)
{
	pthread_mutex_lock(&lp.mu);
	size_t bytes = lp.root_q.parked_bytes;
	for (struct lp_user *u = lp.users; u; u = u->next)
		bytes += u->parked_bytes;
	fprintf(f, "request_threads: %u\n", lp.nthreads);
	fprintf(f, "requests_parked_bytes: %zu\n", bytes);
	fprintf(f, "requests_parked: %lu\n", lp.parked);
	fprintf(f, "requests_refused: %lu\n", lp.refused);
	pthread_mutex_unlock(&lp.mu);
}
