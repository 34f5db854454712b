/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Lock forwarding, so a process using the mount and one using the store directly see each
 * other's locks.
 *
 * POSIX (fcntl) locks belong to a process: the kernel names it by fi->lock_owner. Each
 * (node, owner) pair gets its own descriptor of the backing file, and the owner's locks are
 * taken on it as OFD locks. That keeps POSIX semantics exactly: locks of one owner taken
 * through different handles merge and never conflict with each other, they conflict with
 * everyone else's (OFD and classic POSIX locks conflict), and flush - sent on every close(2)
 * by that owner - drops them all, as closing any descriptor does under POSIX. Classic POSIX
 * locks in the daemon itself would be wrong twice over: all owners would be one process,
 * and any close of the file would silently drop them.
 *
 * flock locks belong to an open file description, which is exactly a FUSE handle: they are
 * taken with flock(2) on the handle's own backing descriptor.
 *
 * A blocking request never holds a worker thread: any user may block as many requests as
 * they have processes, and workers are few. It is tried once without blocking; if the lock
 * is taken, it joins a queue that one thread (lk_run) retries without blocking and answers
 * when the lock is granted, the caller is interrupted (a signal, or its death: the kernel
 * then sends an interrupt) or the daemon stops. A release through the mount retries the
 * waiters of that file at once; a release made directly on the store is noticed by polling,
 * every LK_POLL_MIN at first, backing off to every LK_POLL_MAX. */
#include "stillfs.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#define LK_POLL_MIN 0.001
#define LK_POLL_MAX 0.1
/* A waiter's lock was granted on an owner that was dropped meanwhile: the owner's records
 * are remade and it waits again (not an errno). */
#define LK_REBIND 1

struct lk_owner {
	struct lk_owner *next;
	uint64_t owner;
	int fd;
	uid_t uid;                 /* charged for fd (sf_fd_charge) */
	unsigned refs;             /* the node's list + callers using fd (sf.mu) */
	const void *via;           /* the handle of its last lock request (sf.mu) */
	atomic_bool dead;          /* off the list, its locks dropped (set under sf.mu) */
};

/* A blocking request waiting for its lock. Its handle stays open meanwhile: the caller's
 * blocked system call holds the file. */
struct lk_wait {
	struct lk_wait *next, *prev;
	fuse_req_t req;
	struct node *node;
	struct lk_owner *o;        /* POSIX: the owner (a reference); NULL for flock */
	const void *via;           /* POSIX: the handle of the request */
	uid_t uid;                 /* POSIX: charged for a new owner's descriptor */
	int fd;                    /* where the lock is taken */
	struct flock fl;           /* POSIX */
	int op;                    /* flock: LOCK_SH or LOCK_EX, with LOCK_NB */
	atomic_int intr;           /* the kernel interrupted the request */
	int rc;                    /* the answer, once it left the queue; LK_REBIND */
	double due, delay;         /* next attempt (monotonic), and the one after */
};

/* The queue (lk.mu); the thread's wakeup (lk.cv, CLOCK_MONOTONIC). */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct lk_wait q;
	unsigned n;
	atomic_uint count;         /* n, for the status file and a quick "none" */
	int stop;
	pthread_t thread;
	int started;
} lk = { .mu = PTHREAD_MUTEX_INITIALIZER };

static double lk_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int lk_init(void)
{
	pthread_condattr_t ca;
	int rc;

	lk.q.next = lk.q.prev = &lk.q;
	if ((rc = pthread_condattr_init(&ca)))
		return -rc;
	rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (!rc)
		rc = pthread_cond_init(&lk.cv, &ca);
	pthread_condattr_destroy(&ca);
	return -rc;
}

static void lk_wake(const struct node *n);
static int lk_try(int fd, const struct flock *fl, int op);

static void lk_put(struct lk_owner *o)
{
	pthread_mutex_lock(&sf.mu);
	int last = !--o->refs;
	pthread_mutex_unlock(&sf.mu);
	if (last) {
		close(o->fd);
		sf_fd_uncharge(o->uid);
		free(o);
	}
}

/* The owner's record, with a reference for the caller; created if create is set, its
 * descriptor charged to uid. */
static int lk_get(struct node *n, uint64_t owner, int create, uid_t uid, struct lk_owner **out)
{
	struct lk_owner *o, *fresh = NULL;
	int fd = -1;

	*out = NULL;
	for (;;) {
		pthread_mutex_lock(&sf.mu);
		for (o = n->owners; o && o->owner != owner; o = o->next)
			;
		if (o) {
			o->refs++;
		} else if (fresh) {
			o = fresh;
			fresh = NULL;
			o->next = n->owners;
			n->owners = o;
		}
		pthread_mutex_unlock(&sf.mu);
		if (o || !create)
			break;
		int rc = sf_fd_charge(uid);
		if (rc)
			return rc;
		/* Read-write if at all possible, so both lock types work; the kernel has already
		 * refused a write lock through a handle not open for writing. */
		fd = nd_reopen(n, O_RDWR | O_NONBLOCK);
		if (fd < 0)
			fd = nd_reopen(n, O_RDONLY | O_NONBLOCK);
		if (fd < 0 || !(fresh = calloc(1, sizeof *fresh))) {
			sf_fd_uncharge(uid);
			if (fd >= 0)
				close(fd);
			return fd < 0 ? fd : -ENOMEM;
		}
		fresh->owner = owner;
		fresh->uid = uid;
		fresh->fd = fd;
		fresh->refs = 2;   /* the list's and the caller's */
	}
	if (fresh) {           /* another thread made one meanwhile */
		close(fresh->fd);
		sf_fd_uncharge(fresh->uid);
		free(fresh);
	}
	*out = o;
	return 0;
}

/* Take the first owner of n with this id (or, if handle is set, whose last lock request came
 * through handle) off the list and drop its locks. Finding and unlinking are one step: an
 * owner id names another owner once the kernel reuses it, and a record picked up by a lock
 * request just now must not be dropped for the one before. Returns whether one was found. */
static int lk_drop(struct node *n, uint64_t owner, const void *handle)
{
	struct lk_owner *o = NULL;
	pthread_mutex_lock(&sf.mu);
	for (struct lk_owner **pp = &n->owners; *pp; pp = &(*pp)->next)
		if (handle ? (*pp)->via == handle : (*pp)->owner == owner) {
			o = *pp;
			*pp = o->next;
			/* Under sf.mu: a request that sets via after this sees it (lk_take). */
			atomic_store(&o->dead, 1);
			break;
		}
	pthread_mutex_unlock(&sf.mu);
	if (!o)
		return 0;
	/* Release now, even if another thread still holds the descriptor for a moment: one
	 * that locks on it after this sees dead and moves to a new record. */
	struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET };
	fcntl(o->fd, F_OFD_SETLK, &fl);
	lk_put(o);
	lk_wake(n);
	return 1;
}

void lk_drop_owner(struct node *n, uint64_t owner)
{
	lk_drop(n, owner, NULL);
}

void lk_free_all(struct node *n)
{
	while (n->owners)
		lk_drop_owner(n, n->owners->owner);
}

/* The handle is released: its open file description is gone. An OFD lock's owner is that
 * description, and the kernel tells us of its end only this way (no flush names it, and
 * nothing unlocks it); a POSIX owner that locked through the handle was dropped already,
 * by the flush of the close that let the description go. An owner whose last request came
 * through another handle is kept: the kernel may have given the released file's owner id
 * to a new file already, and that one's locks are on the record now (the released file's
 * stay with them until that file's release: one process locking through two descriptors
 * looks the same, and needs the one record). */
void lk_drop_handle(struct node *n, const void *handle)
{
	while (lk_drop(n, 0, handle))
		;
}

/* Lock (or unlock) fl for owner through handle via: lk_try on the owner's descriptor, with
 * the owner's record (a reference) in *out, NULL for an unlock by an owner without one. A
 * lock granted on a record that was dropped meanwhile (by a flush or a release racing with
 * this request) would vanish with it although the caller is told it holds it: it is taken
 * again on a new record. */
static int lk_take(struct node *n, uint64_t owner, uid_t uid, const void *via,
		   const struct flock *fl, struct lk_owner **out)
{
	int unlock = fl->l_type == F_UNLCK;
	for (;;) {
		struct lk_owner *o;
		int rc = lk_get(n, owner, !unlock, uid, &o);
		*out = o;
		if (rc || !o)
			return rc;
		pthread_mutex_lock(&sf.mu);
		o->via = via;
		pthread_mutex_unlock(&sf.mu);
		rc = lk_try(o->fd, fl, 0);
		if (rc || unlock || !atomic_load(&o->dead))
			return rc;
		struct flock un = { .l_type = F_UNLCK, .l_whence = SEEK_SET };
		fcntl(o->fd, F_OFD_SETLK, &un);
		lk_put(o);
	}
}

/* Retry the waiters on n now: one of its locks was released through the mount. */
static void lk_wake(const struct node *n)
{
	if (!atomic_load(&lk.count))
		return;
	pthread_mutex_lock(&lk.mu);
	for (struct lk_wait *w = lk.q.next; w != &lk.q; w = w->next)
		if (w->node == n)
			w->due = 0;
	pthread_cond_signal(&lk.cv);
	pthread_mutex_unlock(&lk.mu);
}

/* One attempt that never blocks (fl: POSIX on an owner's descriptor, else flock op): 0,
 * -EAGAIN if someone else holds the lock, or another error. */
static int lk_try(int fd, const struct flock *fl, int op)
{
	int r;
	if (fl) {
		struct flock f = *fl;
		r = fcntl(fd, F_OFD_SETLK, &f);
	} else {
		r = flock(fd, op | LOCK_NB);
	}
	if (r == 0)
		return 0;
	return errno == EACCES || errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

/* Answer a waiter that has left the queue, and free it. */
static void lk_finish(struct lk_wait *w)
{
	/* After this returns lk_on_interrupt is not running and will not run: w may go. */
	fuse_req_interrupt_func(w->req, NULL, NULL);
	if (fuse_reply_err(w->req, -w->rc) != 0 && w->rc == 0) {
		/* Nobody learns that the lock was granted (the connection is gone): it must not
		 * stay taken. */
		if (w->o) {
			struct flock f = w->fl;
			f.l_type = F_UNLCK;
			fcntl(w->fd, F_OFD_SETLK, &f);
		} else {
			flock(w->fd, LOCK_UN);
		}
		lk_wake(w->node);
	}
	if (w->o)
		lk_put(w->o);
	free(w);
}

/* Take a waiter's lock (granted on an owner record that was dropped meanwhile) on the
 * owner's record now: -EAGAIN if it must wait again, else its answer is in w->rc. */
static int lk_rebind(struct lk_wait *w)
{
	uint64_t owner = w->o->owner;
	lk_put(w->o);
	w->rc = lk_take(w->node, owner, w->uid, w->via, &w->fl, &w->o);
	if (w->o)
		w->fd = w->o->fd;
	return w->rc;
}

/* Runs in whichever thread reads the kernel's interrupt (or in lk_wait_add, if it came
 * first); lk_finish makes sure w outlives it. */
static void lk_on_interrupt(fuse_req_t req, void *data)
{
	struct lk_wait *w = data;
	(void)req;
	atomic_store(&w->intr, 1);
	pthread_mutex_lock(&lk.mu);
	pthread_cond_signal(&lk.cv);
	pthread_mutex_unlock(&lk.mu);
}

/* Queue w (lk.mu), to be tried at due. */
static void lk_enqueue(struct lk_wait *w, double due)
{
	w->delay = 2 * LK_POLL_MIN;
	w->due = due;
	w->prev = lk.q.prev;
	w->next = &lk.q;
	lk.q.prev->next = w;
	lk.q.prev = w;
	atomic_store(&lk.count, ++lk.n);
	pthread_cond_signal(&lk.cv);
}

/* The waiter thread: retries due waiters in arrival order, answers those granted, failed or
 * interrupted. Answers are sent outside lk.mu: lk_on_interrupt takes it under the request's
 * lock, which lk_finish takes. */
static void *lk_run(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&lk.mu);
	for (;;) {
		struct lk_wait *done = NULL, **tail = &done, *w, *nx;
		double now = lk_now(), next = now + 1;

		for (w = lk.q.next; w != &lk.q; w = nx) {
			nx = w->next;
			if (lk.stop || atomic_load(&w->intr)) {
				w->rc = -EINTR;
			} else if (w->due > now ||
				   (w->rc = lk_try(w->fd, w->o ? &w->fl : NULL, w->op)) == -EAGAIN) {
				if (w->due <= now) {
					w->due = now + w->delay;
					w->delay = w->delay * 2 < LK_POLL_MAX ? w->delay * 2 : LK_POLL_MAX;
				}
				next = w->due < next ? w->due : next;
				continue;
			} else if (!w->rc && w->o && atomic_load(&w->o->dead)) {
				/* Its owner was dropped while it waited (a flush by another thread of
				 * the process): the lock belongs on the owner's new record. */
				struct flock un = { .l_type = F_UNLCK, .l_whence = SEEK_SET };
				fcntl(w->fd, F_OFD_SETLK, &un);
				w->rc = LK_REBIND;
			}
			w->prev->next = w->next;
			w->next->prev = w->prev;
			w->next = NULL;
			*tail = w;
			tail = &w->next;
			lk.n--;
		}
		atomic_store(&lk.count, lk.n);
		if (done) {
			pthread_mutex_unlock(&lk.mu);
			struct lk_wait *again = NULL;
			for (w = done; w; w = nx) {
				nx = w->next;
				if (w->rc == LK_REBIND && lk_rebind(w) == -EAGAIN) {
					w->next = again;
					again = w;
				} else {
					lk_finish(w);
				}
			}
			pthread_mutex_lock(&lk.mu);
			for (w = again; w; w = nx) {
				nx = w->next;
				lk_enqueue(w, now);
			}
			continue;
		}
		if (lk.stop)
			break;
		struct timespec ts;
		double whole = (double)(time_t)next;
		ts.tv_sec = (time_t)next;
		ts.tv_nsec = (long)((next - whole) * 1e9);
		pthread_cond_timedwait(&lk.cv, &lk.mu, &ts);
	}
	pthread_mutex_unlock(&lk.mu);
	return NULL;
}

/* Queue a blocking request on handle h whose lock is taken: POSIX on owner o (it takes over
 * o's reference; uid for a new record), flock (o NULL) with op. */
static void lk_wait_add(fuse_req_t req, struct fh *h, struct lk_owner *o, uid_t uid,
			const struct flock *fl, int op)
{
	struct lk_wait *w = calloc(1, sizeof *w);
	if (!w) {
		if (o)
			lk_put(o);
		fuse_reply_err(req, ENOLCK);
		return;
	}
	w->req = req;
	w->node = h->node;
	w->o = o;
	w->via = h;
	w->uid = uid;
	w->fd = o ? o->fd : h->fd;
	if (fl)
		w->fl = *fl;
	w->op = op;
	/* Before w is queued nothing else answers req, so req is valid here; an interrupt
	 * that came already calls lk_on_interrupt at once. */
	fuse_req_interrupt_func(req, lk_on_interrupt, w);
	pthread_mutex_lock(&lk.mu);
	int queued = lk.started && !lk.stop;
	if (queued)
		lk_enqueue(w, lk_now() + LK_POLL_MIN);
	pthread_mutex_unlock(&lk.mu);
	if (!queued) {
		w->rc = -EINTR;
		lk_finish(w);
	}
}

int lk_start(void)
{
	pthread_mutex_lock(&lk.mu);
	int rc = pthread_create(&lk.thread, NULL, lk_run, NULL);
	lk.started = rc == 0;
	pthread_mutex_unlock(&lk.mu);
	return -rc;
}

void lk_stop(void)
{
	pthread_mutex_lock(&lk.mu);
	int started = lk.started;
	lk.stop = 1;
	pthread_cond_signal(&lk.cv);
	pthread_mutex_unlock(&lk.mu);
	if (started)
		pthread_join(lk.thread, NULL);
}

unsigned lk_waiting(void)
{
	return atomic_load(&lk.count);
}

static void lk_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct flock *lock)
{
	struct fh *h = (struct fh *)(uintptr_t)fi->fh;
	struct lk_owner *o;
	int rc = h->fd < 0 ? -EINVAL : lk_get(h->node, fi->lock_owner, 0, 0, &o);
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	/* On the owner's descriptor its own locks do not count as conflicts, as with POSIX;
	 * an owner without one has no locks, and any descriptor will do. */
	struct flock fl = *lock;
	fl.l_pid = 0;
	if (fcntl(o ? o->fd : h->fd, F_OFD_GETLK, &fl) < 0)
		rc = -errno;
	if (o)
		lk_put(o);
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	if (fl.l_pid < 0)
		fl.l_pid = 0;      /* an OFD lock has no process to name */
	fuse_reply_lock(req, &fl);
}

static void lk_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct flock *lock, int sleep)
{
	struct fh *h = (struct fh *)(uintptr_t)fi->fh;
	struct lk_owner *o = NULL;
	struct flock fl = *lock;
	uid_t uid = fuse_req_ctx(req)->uid;

	fl.l_pid = 0;
	int rc = h->fd < 0 ? -EINVAL : lk_take(h->node, fi->lock_owner, uid, h, &fl, &o);
	if (o) {
		if (rc == -EAGAIN && sleep) {
			lk_wait_add(req, h, o, uid, &fl, 0);
			return;
		}
		lk_put(o);
		if (!rc && fl.l_type == F_UNLCK)
			lk_wake(h->node);
	}
	fuse_reply_err(req, -rc);
}

static void lk_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
	struct fh *h = (struct fh *)(uintptr_t)fi->fh;
	int rc = h->fd < 0 ? -EINVAL : lk_try(h->fd, NULL, op);

	if (rc == -EAGAIN && !(op & LOCK_NB)) {
		lk_wait_add(req, h, NULL, 0, NULL, op);
		return;
	}
	if (!rc && (op & LOCK_UN))
		lk_wake(h->node);
	fuse_reply_err(req, -rc);
}

void lk_register(struct fuse_lowlevel_ops *ops)
{
	ops->getlk = lk_getlk;
	ops->setlk = lk_setlk;
	ops->flock = lk_flock;
}
