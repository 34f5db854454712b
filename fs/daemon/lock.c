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
 * A blocking request occupies a worker thread in F_OFD_SETLKW or flock. An interrupt from
 * the kernel (the caller got a signal) or shutdown wakes it with SIGUSR2. */
#include "stillfs.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

struct lk_owner {
	struct lk_owner *next;
	uint64_t owner;
	int fd;
	uid_t uid;                 /* charged for fd (sf_fd_charge) */
	unsigned refs;             /* the node's list + callers using fd (sf.mu) */
	const void *via;           /* the handle of its last lock request (sf.mu) */
};

struct lk_waiter {
	struct lk_waiter *next, *prev;
	pthread_t thread;
	atomic_int intr;
};

static pthread_mutex_t lk_wmu = PTHREAD_MUTEX_INITIALIZER;
static struct lk_waiter lk_waiters = { &lk_waiters, &lk_waiters, 0, 0 };

static void lk_on_signal(int sig) { (void)sig; }

int lk_init(void)
{
	/* No SA_RESTART: the point is to make a blocked fcntl/flock return EINTR. */
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = lk_on_signal;
	sigemptyset(&sa.sa_mask);
	return sigaction(SIGUSR2, &sa, NULL) < 0 ? -errno : 0;
}

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

void lk_drop_owner(struct node *n, uint64_t owner)
{
	struct lk_owner *o = NULL;
	pthread_mutex_lock(&sf.mu);
	for (struct lk_owner **pp = &n->owners; *pp; pp = &(*pp)->next)
		if ((*pp)->owner == owner) {
			o = *pp;
			*pp = o->next;
			break;
		}
	pthread_mutex_unlock(&sf.mu);
	if (!o)
		return;
	/* Release now, even if another thread still holds the descriptor for a moment. */
	struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET };
	fcntl(o->fd, F_OFD_SETLK, &fl);
	lk_put(o);
}

void lk_free_all(struct node *n)
{
	while (n->owners)
		lk_drop_owner(n, n->owners->owner);
}

/* The handle is released: its open file description is gone. An OFD lock's owner is that
 * description, and the kernel tells us of its end only this way (no flush names it, and
 * nothing unlocks it); a POSIX owner that locked through the handle was dropped already,
 * by the flush of the close that let the description go. */
void lk_drop_handle(struct node *n, const void *handle)
{
	for (;;) {
		uint64_t owner = 0;
		int found = 0;
		pthread_mutex_lock(&sf.mu);
		for (struct lk_owner *o = n->owners; o && !found; o = o->next)
			if (o->via == handle) {
				owner = o->owner;
				found = 1;
			}
		pthread_mutex_unlock(&sf.mu);
		if (!found)
			return;
		lk_drop_owner(n, owner);
	}
}

static void lk_on_interrupt(fuse_req_t req, void *data)
{
	struct lk_waiter *w = data;
	(void)req;
	atomic_store(&w->intr, 1);
	pthread_kill(w->thread, SIGUSR2);
}

void lk_kick_waiters(void)
{
	/* Also re-sends to waiters already told: a signal that arrived just before the thread
	 * entered the kernel is otherwise lost. */
	pthread_mutex_lock(&lk_wmu);
	for (struct lk_waiter *w = lk_waiters.next; w != &lk_waiters; w = w->next)
		if (atomic_load(&w->intr) || atomic_load(&sf.exiting))
			pthread_kill(w->thread, SIGUSR2);
	pthread_mutex_unlock(&lk_wmu);
}

/* One lock call, blocking until granted, interrupted or shutting down. */
static int lk_call(fuse_req_t req, int fd, int cmd, struct flock *fl, int flock_op, int wait)
{
	if (!wait) {
		int r = fl ? fcntl(fd, cmd, fl) : flock(fd, flock_op);
		return r < 0 ? -errno : 0;
	}
	struct lk_waiter w = { .thread = pthread_self() };
	int rc;
	pthread_mutex_lock(&lk_wmu);
	w.next = lk_waiters.next;
	w.prev = &lk_waiters;
	lk_waiters.next->prev = &w;
	lk_waiters.next = &w;
	pthread_mutex_unlock(&lk_wmu);
	fuse_req_interrupt_func(req, lk_on_interrupt, &w);
	for (;;) {
		if (atomic_load(&w.intr) || atomic_load(&sf.exiting)) {
			rc = -EINTR;
			break;
		}
		if ((fl ? fcntl(fd, cmd, fl) : flock(fd, flock_op)) == 0) {
			rc = 0;
			break;
		}
		if (errno != EINTR) {
			rc = -errno;
			break;
		}
	}
	/* After this returns, lk_on_interrupt is not running and will not run. */
	fuse_req_interrupt_func(req, NULL, NULL);
	pthread_mutex_lock(&lk_wmu);
	w.prev->next = w.next;
	w.next->prev = w.prev;
	pthread_mutex_unlock(&lk_wmu);
	return rc;
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
	int unlock = lock->l_type == F_UNLCK;
	int rc = h->fd < 0 ? -EINVAL : lk_get(h->node, fi->lock_owner, !unlock,
							fuse_req_ctx(req)->uid, &o);

	if (!rc && o) {
		struct flock fl = *lock;
		pthread_mutex_lock(&sf.mu);
		o->via = h;
		pthread_mutex_unlock(&sf.mu);
		fl.l_pid = 0;
		rc = lk_call(req, o->fd, sleep && !unlock ? F_OFD_SETLKW : F_OFD_SETLK, &fl, 0,
			     sleep && !unlock);
		lk_put(o);
	}
	fuse_reply_err(req, -rc);
}

static void lk_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
	struct fh *h = (struct fh *)(uintptr_t)fi->fh;
	int rc = h->fd < 0 ? -EINVAL
			   : lk_call(req, h->fd, 0, NULL, op, !(op & (LOCK_NB | LOCK_UN)));
	fuse_reply_err(req, -rc);
}

void lk_register(struct fuse_lowlevel_ops *ops)
{
	ops->getlk = lk_getlk;
	ops->setlk = lk_setlk;
	ops->flock = lk_flock;
}
