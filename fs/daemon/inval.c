/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Kernel caching of the live view, kept coherent with direct changes to the store.
 *
 * The store is also written directly, not only through the mount, so by default the kernel
 * would have to ask us for every attribute and name (timeouts 0): five round trips for one
 * stat(2) of a file two directories down. Instead every live directory the kernel knows is
 * watched with inotify; its entries and attributes get positive timeouts (SF_LIVE_TIMEOUT),
 * and each change seen in the store is turned into the matching invalidation:
 *
 *   name created, deleted or moved in D     -> notify_inval_entry(D, name), inval_inode(D)
 *   file in D modified or its inode changed -> inval_inode(file) (attributes and pages)
 *   D's own attributes changed               -> inval_inode(D)
 *
 * Changes made through the mount are known to the kernel already; their events only cost a
 * re-lookup. Races are the kernel's to settle: an invalidation sent while a lookup of the
 * name is in flight waits for the directory lock the lookup holds, and attributes fetched
 * before an inode invalidation are discarded by their attribute version. What is left is the
 * delay between a change and its event being read here (milliseconds). A lost event queue
 * (IN_Q_OVERFLOW) invalidates every known inode; names cached then may outlive a deletion
 * for at most SF_LIVE_TIMEOUT, or not at all where the kernel can bump the connection's
 * epoch (FUSE_NOTIFY_INC_EPOCH, Linux 6.16), which makes it look every cached name up again.
 * A directory that cannot be watched (watch limit) keeps timeouts 0 for what is below it.
 *
 * The same thread keeps the node table within its budget (sf.node_budget): past three
 * quarters of it, the least recently looked-up half is offered back to the kernel with
 * FUSE_NOTIFY_PRUNE (Linux 6.18), which drops the unused ones and sends FORGET for them.
 * Where nodes reopen their descriptors by file handle (node.c) this only bounds memory.
 * Otherwise every node holds a descriptor, and without FUSE_NOTIFY_PRUNE a walk of a large
 * store stops at the descriptor limit (EMFILE) until the kernel's own memory pressure
 * forgets inodes.
 *
 * Locking: the wd -> node map and node->wd are under sf.mu, and so are inotify_add_watch and
 * inotify_rm_watch (a watch belongs to an inode, so a node freed and made again for the same
 * directory would otherwise lose its new watch to the old removal). Notifications are sent
 * with no lock held: the kernel may be waiting for a request of ours while it holds the
 * directory lock that the notification needs. */
#include "stillfs.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#define IV_BUCKETS 4096
#define IV_MASK (IN_MODIFY | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | \
		 IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK)

struct iv_ent {
	int wd;
	struct node *n;
	struct iv_ent *next;
};

/* What one event asks of the kernel, decided under sf.mu and sent after. */
struct iv_act {
	fuse_ino_t ino;
	char name[NAME_MAX + 1];   /* empty: invalidate ino's attributes and pages */
};

static struct iv_ent *iv_tab[IV_BUCKETS];
static int iv_fd = -1;
static int iv_stop[2] = { -1, -1 };
static int iv_kick[2] = { -1, -1 };   /* prune requests */
static atomic_int iv_prune_asked;
static int iv_prune_broken, iv_epoch_broken;
static pthread_t iv_thread;
static atomic_int iv_running;     /* inotify watching: live nodes may be cached */
static int iv_thread_up;
static size_t iv_watches, iv_budget;
static struct fuse_session *iv_se;

static struct iv_ent **iv_slot(int wd)
{
	struct iv_ent **pp = &iv_tab[(unsigned)wd % IV_BUCKETS];
	while (*pp && (*pp)->wd != wd)
		pp = &(*pp)->next;
	return pp;
}

/* sf.mu held. */
void iv_watch_locked(struct node *n)
{
	char path[64];
	if (iv_fd < 0 || n->wd > 0 || n->kind != ND_LIVE || !S_ISDIR(n->type) ||
	    iv_watches >= iv_budget)
		return;
	struct iv_ent *e = malloc(sizeof *e);
	if (!e)
		return;
	snprintf(path, sizeof path, "/proc/self/fd/%d", n->fd);
	int wd = inotify_add_watch(iv_fd, path, IV_MASK);
	if (wd < 0) {
		if (errno == ENOSPC && iv_budget > iv_watches) {
			log_warn("inotify watch limit reached after %zu directories: the live view "
				 "below the others is not cached (fs.inotify.max_user_watches)",
				 iv_watches);
			iv_budget = iv_watches;
		}
		free(e);
		return;
	}
	struct iv_ent **pp = iv_slot(wd);
	if (*pp) {             /* the inode's watch is ours already (should not happen) */
		free(e);
		(*pp)->n = n;
	} else {
		e->wd = wd;
		e->n = n;
		e->next = NULL;
		*pp = e;
		iv_watches++;
	}
	n->wd = wd;
}

void iv_watch(struct node *n)
{
	pthread_mutex_lock(&sf.mu);
	iv_watch_locked(n);
	pthread_mutex_unlock(&sf.mu);
}

void iv_unwatch_locked(struct node *n)
{
	if (n->wd <= 0)
		return;
	struct iv_ent **pp = iv_slot(n->wd), *e = *pp;
	if (e && e->n == n) {
		*pp = e->next;
		free(e);
		iv_watches--;
		inotify_rm_watch(iv_fd, n->wd);
	}
	n->wd = 0;
}

int iv_cached(const struct node *n)
{
	return iv_running && n->kind == ND_LIVE && n->iv_ok;
}

void iv_mark(struct node *child, const struct node *parent)
{
	if (parent->wd > 0 || child->wd > 0)
		child->iv_ok = 1;
}

struct iv_use {
	uint64_t used;
	uint64_t id;
};

static int iv_use_cmp(const void *a, const void *b)
{
	const struct iv_use *x = a, *y = b;
	return x->used < y->used ? -1 : x->used > y->used;
}

/* Offer the kernel the least recently looked-up nodes until the table is at half its budget. */
static void iv_prune(void)
{
	struct iv_use *u = NULL;
	size_t n = 0, want = 0;

	atomic_store(&iv_prune_asked, 0);
	pthread_mutex_lock(&sf.mu);
	if (sf.node_budget && sf.nnodes > sf.node_budget / 2)
		want = sf.nnodes - sf.node_budget / 2;
	if (want && (u = malloc(sf.nnodes * sizeof *u))) {
		for (size_t i = 0; i < sf.tabsize; i++)
			for (struct node *m = sf.tab[i]; m; m = m->hnext)
				if (!m->is_static && n < sf.nnodes)
					u[n++] = (struct iv_use){ m->used, nd_id(m) };
		qsort(u, n, sizeof *u, iv_use_cmp);
		if (want > n)
			want = n;
		/* Those still in use stay: let the next round try others first. */
		for (size_t i = 0; i < want; i++)
			nd_of(u[i].id)->used = ++sf.use_clock;
	}
	pthread_mutex_unlock(&sf.mu);
	for (size_t i = 0; i < want && !iv_prune_broken; i += 512) {
		uint64_t ids[512];
		uint32_t k, count = (uint32_t)(want - i < 512 ? want - i : 512);
		for (k = 0; k < count; k++)
			ids[k] = u[i + k].id;
		int rc = fc_notify_prune(iv_se, ids, count);
		if (rc) {
			iv_prune_broken = 1;
			log_warn("the kernel cannot forget inodes on request (FUSE_NOTIFY_PRUNE: %s): "
				 "at %zu known inodes, lookups fail with EMFILE", strerror(-rc),
				 sf.node_budget);
		}
	}
	free(u);
}

void iv_node_added(void)
{
	if (!sf.node_budget || sf.nnodes <= sf.node_budget / 4 * 3 || iv_kick[1] < 0 ||
	    iv_prune_broken || atomic_exchange(&iv_prune_asked, 1))
		return;
	if (write(iv_kick[1], "p", 1) < 0)
		atomic_store(&iv_prune_asked, 0);
}

/* Every live node's attributes and pages, every cached name (after a lost event queue). */
static void iv_all(void)
{
	fuse_ino_t *ids = NULL;
	size_t n = 0;

	pthread_mutex_lock(&sf.mu);
	ids = malloc((sf.nnodes + 1) * sizeof *ids);
	if (ids) {
		ids[n++] = FUSE_ROOT_ID;
		for (size_t i = 0; i < sf.tabsize; i++)
			for (struct node *m = sf.tab[i]; m; m = m->hnext)
				if (m->kind == ND_LIVE && n <= sf.nnodes)
					ids[n++] = nd_id(m);
	}
	pthread_mutex_unlock(&sf.mu);
	for (size_t i = 0; i < n; i++)
		fuse_lowlevel_notify_inval_inode(iv_se, ids[i], 0, 0);
	free(ids);
	if (!iv_epoch_broken && fc_notify_inc_epoch(iv_se) != 0)
		iv_epoch_broken = 1;
	log_warn("inotify queue overflowed: invalidated %zu cached inodes%s", n,
		 iv_epoch_broken ? "; names cached now may outlive their deletion for a while"
				 : " and every cached name");
}

/* sf.mu held. Turn one event into at most two actions. */
static size_t iv_decide(const struct inotify_event *ev, struct iv_act *act)
{
	struct iv_ent *e = *iv_slot(ev->wd);
	size_t k = 0;

	if (ev->mask & IN_IGNORED) {
		if (e) {       /* the directory is gone: its watch went with it */
			e->n->wd = 0;
			*iv_slot(ev->wd) = e->next;
			free(e);
			iv_watches--;
		}
		return 0;
	}
	if (!e)
		return 0;
	struct node *d = e->n;
	fuse_ino_t did = nd_id(d);
	if (!ev->len || !ev->name[0]) {         /* the directory itself */
		act[k].ino = did;
		act[k++].name[0] = 0;
		return k;
	}
	if (d == &sf.root && sf_reserved(ev->name))
		return 0;   /* names of ours: the store's own are hidden behind them */
	if (ev->mask & (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO)) {
		act[k].ino = did;
		snprintf(act[k++].name, sizeof act[0].name, "%s", ev->name);
		act[k].ino = did;
		act[k++].name[0] = 0;
	} else {
		struct stat st;
		if (fstatat(d->fd, ev->name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			struct node *c = nd_find_live(st.st_dev, st.st_ino);
			if (c) {
				act[k].ino = nd_id(c);
				act[k++].name[0] = 0;
			}
		}
	}
	return k;
}

static void iv_send(const struct iv_act *a)
{
	if (a->name[0])
		fuse_lowlevel_notify_inval_entry(iv_se, a->ino, a->name, strlen(a->name));
	else
		fuse_lowlevel_notify_inval_inode(iv_se, a->ino, 0, 0);
}

static void *iv_main(void *arg)
{
	(void)arg;
	enum { BUF = 64 * 1024, MAXACT = 512 };
	char *buf = malloc(BUF);
	struct iv_act *act = malloc(MAXACT * sizeof *act);
	struct pollfd pf[3] = { { .fd = iv_stop[0], .events = POLLIN },
				{ .fd = iv_kick[0], .events = POLLIN },
				{ .fd = iv_fd, .events = POLLIN } };

	while (buf && act) {
		if (poll(pf, iv_fd >= 0 ? 3 : 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[0].revents)
			break;
		if (pf[1].revents) {
			char c[64];
			if (read(iv_kick[0], c, sizeof c) < 0 && errno != EAGAIN)
				break;
			iv_prune();
		}
		if (iv_fd < 0 || !pf[2].revents)
			continue;
		ssize_t len = read(iv_fd, buf, BUF);
		if (len <= 0) {
			if (len < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			break;
		}
		size_t nact = 0;
		int overflow = 0;
		pthread_mutex_lock(&sf.mu);
		for (char *p = buf; p < buf + len;) {
			const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
			p += sizeof *ev + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				overflow = 1;
				continue;
			}
			if (nact + 2 > MAXACT) {
				overflow = 1;   /* more than we keep: treat as a lost queue */
				continue;
			}
			struct iv_act two[2];
			size_t k = iv_decide(ev, two);
			for (size_t i = 0; i < k; i++) {
				/* Writes come in runs: skip what the batch already asks for. */
				int dup = 0;
				for (size_t j = nact; j-- > 0 && j + 8 >= nact;)
					if (act[j].ino == two[i].ino && !strcmp(act[j].name, two[i].name))
						dup = 1;
				if (!dup)
					act[nact++] = two[i];
			}
		}
		pthread_mutex_unlock(&sf.mu);
		if (overflow)
			iv_all();
		for (size_t i = 0; i < nact; i++)
			iv_send(&act[i]);
	}
	free(buf);
	free(act);
	return NULL;
}

int iv_start(struct fuse_session *se, int watch)
{
	unsigned long max = 8192;
	FILE *f = fopen("/proc/sys/fs/inotify/max_user_watches", "r");
	if (f) {
		if (fscanf(f, "%lu", &max) != 1)
			max = 8192;
		fclose(f);
	}
	/* The capture helper watches every directory of the store with the same user's
	 * watches: leave it most of them. */
	iv_budget = max / 4;
	/* A watched directory keeps its descriptor (its events are resolved against it): at
	 * most half of the nodes' budget, so the rest can be closed and reopened. */
	if (sf.fd_budget && iv_budget > sf.fd_budget / 2)
		iv_budget = sf.fd_budget / 2;
	iv_se = se;
	if (pipe2(iv_stop, O_CLOEXEC) < 0 || pipe2(iv_kick, O_CLOEXEC | O_NONBLOCK) < 0) {
		log_warn("cannot make the invalidation thread's pipes: %s", strerror(errno));
		return -1;
	}
	if (watch) {
		iv_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
		if (iv_fd < 0)
			log_warn("inotify: %s; the live view is not cached", strerror(errno));
		else
			iv_watch(&sf.root);
		if (sf.root.wd > 0) {
			sf.root.iv_ok = 1;
		} else if (iv_fd >= 0) {
			close(iv_fd);
			iv_fd = -1;
		}
	}
	if (pthread_create(&iv_thread, NULL, iv_main, NULL) != 0) {
		log_warn("cannot start the invalidation thread; the live view is not cached");
		pthread_mutex_lock(&sf.mu);
		iv_unwatch_locked(&sf.root);
		pthread_mutex_unlock(&sf.mu);
		if (iv_fd >= 0)
			close(iv_fd);
		iv_fd = -1;
		return -1;
	}
	iv_thread_up = 1;
	iv_running = iv_fd >= 0;
	return 0;
}

void iv_stop_thread(void)
{
	if (!iv_thread_up)
		return;
	iv_running = 0;
	iv_thread_up = 0;
	if (write(iv_stop[1], "x", 1) < 0)
		log_warn("stopping the invalidation thread: %s", strerror(errno));
	pthread_join(iv_thread, NULL);
}
