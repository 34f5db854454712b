/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The inode table: one node per backing inode the kernel knows. A node reaches its file
 * through an O_PATH descriptor, so every operation is an *at() call relative to it (never a
 * path through the mountpoint, which may cover the store itself).
 *
 * Nodeids are node addresses. Live nodes are keyed by (dev, ino). Snapshot nodes are keyed by
 * (generation, dev, ino): a file shared by hard link between two generations gets one nodeid
 * per generation, so a node always knows which generation it pins, and the kernel never
 * serves one generation's cached pages or attributes under another's name.
 *
 * The kernel may know far more inodes than the daemon may hold descriptors. Where file
 * handles work (a root daemon: open_by_handle_at needs CAP_DAC_READ_SEARCH), a node also
 * keeps its file handle, and its descriptor is closed when more than sf.fd_budget are open
 * and it is the least recently used one nobody has pinned; nd_pin opens it again from the
 * handle. A handle names the inode and its generation, so a closed node whose inode number
 * was freed and reused is noticed at the next lookup of the new file (nd_from_fd) and never
 * reopened as it. Directories watched by inotify keep their descriptors (inval.c needs them
 * for every event; their number is bounded by half the budget). Without file handles every
 * node holds its descriptor, and the node table itself is what is bounded (nd_budget_wait). */
#include "stillfs.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <unistd.h>

#define ND_OF_LRU(l) ((struct node *)(void *)((char *)(l) - offsetof(struct node, lru)))

struct sf sf;

static int nd_handles;          /* descriptors may be closed and reopened by handle */
static dev_t nd_cache_dev;      /* the filesystem of sf.cachefd (snapshot nodes) */
static int nd_store_mfd = -1;   /* the store's root, not O_PATH: open_by_handle_at needs that */
/* Open descriptors that may be closed, the most recently used first (sf.mu). */
static struct sf_link nd_lru = { &nd_lru, &nd_lru };

/* Both filesystems must give handles and take them back (the latter needs privilege). */
int nd_handles_init(void)
{
	struct stat st, got;
	int ok = 1;

	nd_store_mfd = openat(sf.storefd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	const int mfds[2] = { nd_store_mfd, sf.cachefd };

	for (int i = 0; i < 2 && ok; i++) {
		struct file_handle *h = malloc(sizeof *h + MAX_HANDLE_SZ);
		int mnt, fd = -1;
		ok = 0;
		if (h && fstat(mfds[i], &st) == 0) {
			h->handle_bytes = MAX_HANDLE_SZ;
			if (name_to_handle_at(mfds[i], "", h, &mnt, AT_EMPTY_PATH) == 0)
				fd = open_by_handle_at(mfds[i], h, O_PATH | O_CLOEXEC);
			ok = fd >= 0 && fstat(fd, &got) == 0 && got.st_dev == st.st_dev &&
			     got.st_ino == st.st_ino;
			if (i == 1)
				nd_cache_dev = st.st_dev;
		}
		if (fd >= 0)
			close(fd);
		free(h);
	}
	if (!ok && nd_store_mfd >= 0) {
		close(nd_store_mfd);
		nd_store_mfd = -1;
	}
	return nd_handles = ok;
}

int nd_init(void)
{
	sf.tabsize = 1024;
	sf.tab = calloc(sf.tabsize, sizeof *sf.tab);
	return sf.tab ? 0 : -ENOMEM;
}

struct node *nd_of(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? &sf.root : (struct node *)(uintptr_t)ino;
}

fuse_ino_t nd_id(const struct node *n)
{
	return n == &sf.root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)n;
}

static size_t nd_hash(const struct gen *g, dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ULL;
	h ^= ((uint64_t)dev + (uint64_t)(uintptr_t)g) * 0xc2b2ae3d27d4eb4fULL;
	h ^= h >> 29;
	return (size_t)h;
}

/* sf.mu held. */
static struct node *nd_find(const struct gen *g, dev_t dev, ino_t ino)
{
	for (struct node *n = sf.tab[nd_hash(g, dev, ino) & (sf.tabsize - 1)]; n; n = n->hnext)
		if (n->ino == ino && n->dev == dev && n->gen == g)
			return n;
	return NULL;
}

struct node *nd_find_live(dev_t dev, ino_t ino)
{
	return nd_find(NULL, dev, ino);
}

/* sf.mu held. Growing is best effort: a full table only gets slower. */
static void nd_insert(struct node *n)
{
	if (sf.nnodes >= sf.tabsize) {
		size_t size = sf.tabsize * 2;
		struct node **tab = calloc(size, sizeof *tab);
		if (tab) {
			for (size_t i = 0; i < sf.tabsize; i++)
				for (struct node *m = sf.tab[i], *next; m; m = next) {
					next = m->hnext;
					size_t b = nd_hash(m->gen, m->dev, m->ino) & (size - 1);
					m->hnext = tab[b];
					tab[b] = m;
				}
			free(sf.tab);
			sf.tab = tab;
			sf.tabsize = size;
		}
	}
	struct node **b = &sf.tab[nd_hash(n->gen, n->dev, n->ino) & (sf.tabsize - 1)];
	n->hnext = *b;
	*b = n;
	sf.nnodes++;
}

static void nd_remove(struct node *n)
{
	for (struct node **pp = &sf.tab[nd_hash(n->gen, n->dev, n->ino) & (sf.tabsize - 1)]; *pp;
	     pp = &(*pp)->hnext)
		if (*pp == n) {
			*pp = n->hnext;
			sf.nnodes--;
			return;
		}
}

double nd_attr_timeout(const struct node *n)
{
	/* Live files may change behind our back (the store is written directly): the kernel
	 * caches them only where an inotify watch will tell it of changes; snapshot nodes never
	 * change; `.snapshot` itself mirrors the
	 * current generation's root, which changes now and then. */
	switch (n->kind) {
	case ND_LIVE:
		return iv_cached(n) ? SF_LIVE_TIMEOUT : 0;
	case ND_SNAP:
		return SF_SNAP_TIMEOUT;
	case ND_SNAPDIR:
		return SF_SNAP_TIMEOUT;
	default:
		return 0;
	}
}

void nd_fill_timeouts(const struct node *n, struct fuse_entry_param *e)
{
	e->attr_timeout = nd_attr_timeout(n);
	e->entry_timeout = nd_attr_timeout(n);
}

/* A generation's manifest names every entry and holds a digest of every file, also of those
 * the caller may not read (the digest of a short secret gives it away): it is for the store's
 * owner, like the store's most private file. */
static void nd_manifest_attr(struct stat *st)
{
	st->st_mode = S_IFREG | 0400;
	st->st_uid = sf.snapdir_st.st_uid;
	st->st_gid = sf.snapdir_st.st_gid;
}

int nd_stat(struct node *n, struct stat *st)
{
	if (n->kind == ND_STATUS) {
		struct stat rst;
		memset(st, 0, sizeof *st);
		st->st_ino = n->ino;
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_uid = sf.uid;
		st->st_gid = sf.gid;
		/* Setting user.stillfs.refresh on it forces a capture: allowed to whoever may
		 * write the store's root, as on the root itself (writes still fail). */
		if (fstatat(sf.storefd, "", &rst, AT_EMPTY_PATH) == 0) {
			/* (less what the root's ACL denies: forcing captures is for its writers) */
			st->st_mode |= cap_acl_mode(sf.storefd, rst.st_mode) & 0222;
			st->st_uid = rst.st_uid;
			st->st_gid = rst.st_gid;
		}
		st->st_blksize = 4096;
		st->st_atim = st->st_mtim = st->st_ctim = ut_realtime();
		return 0;
	}
	if (n->kind == ND_SNAPDIR) {
		/* Fixed: taken from the store's root at mount time. Readers such as tar check that
		 * a directory did not change while they read it; this one must not seem to, even
		 * when a newer generation appears. Never a capture just to stat it. */
		*st = sf.snapdir_st;
		return 0;
	}
	int rc = nd_pin(n);
	if (rc)
		return rc;
	if (fstatat(n->fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
		rc = -errno;
	nd_unpin(n);
	if (rc)
		return rc;
	if (n->kind == ND_SNAP)
		nd_snap_attr(st);
	if (n->is_manifest)
		nd_manifest_attr(st);
	return 0;
}

/* What a snapshot file looks like: read-only, and attributes that depend on nothing but the
 * captured file. A file unchanged between generations is one inode shared by hard links, so
 * its link count and ctime move whenever a generation comes or goes; a reader (tar, rsync)
 * that sees them change while it reads thinks the file changed. */
void nd_snap_attr(struct stat *st)
{
	st->st_mode &= ~(mode_t)0222;
	st->st_ctim = st->st_mtim;
	st->st_atim = st->st_mtim;
	if (!S_ISDIR(st->st_mode))
		st->st_nlink = 1;
}

int nd_check(const struct node *n)
{
	return n->kind == ND_SNAP && gen_dead(n->gen) ? -ESTALE : 0;
}

/* The file handle of fd, a node's descriptor on the filesystem its kind reopens from, or
 * NULL (no handles, another filesystem mounted below the store, no memory). */
static struct file_handle *nd_handle_of(int fd, dev_t dev, enum nd_kind kind)
{
	union {
		struct file_handle h;
		char room[sizeof(struct file_handle) + MAX_HANDLE_SZ];
	} u;
	struct file_handle *h;
	int mnt;

	if (!nd_handles || dev != (kind == ND_SNAP ? nd_cache_dev : sf.root.dev))
		return NULL;
	u.h.handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(fd, "", &u.h, &mnt, AT_EMPTY_PATH) < 0)
		return NULL;
	/* Every node keeps one, of its own size: ext4's is 8 bytes, not MAX_HANDLE_SZ. */
	if ((h = malloc(sizeof *h + u.h.handle_bytes)))
		memcpy(h, &u.h, sizeof *h + u.h.handle_bytes);
	return h;
}

static int nd_same_handle(const struct file_handle *a, const struct file_handle *b)
{
	return a && b && a->handle_type == b->handle_type && a->handle_bytes == b->handle_bytes &&
	       !memcmp(a->f_handle, b->f_handle, a->handle_bytes);
}

/* Open a closed node's descriptor again from its handle: the same inode or -ESTALE. */
static int nd_open_handle(const struct node *n)
{
	int mfd = n->kind == ND_SNAP ? sf.cachefd : nd_store_mfd;
	struct stat st;

	/* A request served with the caller's fsuid has no CAP_DAC_READ_SEARCH: the reopen is
	 * the daemon's own business, not the caller's. */
	uid_t fsuid = (uid_t)setfsuid((uid_t)-1);
	if (fsuid != 0 && sf.uid == 0)
		setfsuid(0);
	int fd = open_by_handle_at(mfd, n->handle, O_PATH | O_CLOEXEC);
	int err = errno;
	if (fsuid != 0 && sf.uid == 0)
		setfsuid(fsuid);
	if (fd < 0)
		return -err;
	if (fstat(fd, &st) < 0 || st.st_dev != n->dev || st.st_ino != n->ino) {
		close(fd);
		return -ESTALE;
	}
	return fd;
}

static int nd_closable(const struct node *n)
{
	return n->handle && n->fd >= 0 && !n->pins && n->wd <= 0 && !n->gone;
}

/* sf.mu held. Close what exceeds the budget, least recently used first: the descriptors
 * are returned in out[] (at most max) to be closed once the mutex is let go. */
static size_t nd_evict(int *out, size_t max)
{
	size_t k = 0;
	while (sf.nfds > sf.fd_budget && k < max && nd_lru.prev != &nd_lru) {
		struct node *n = ND_OF_LRU(nd_lru.prev);
		sf_link_out(&n->lru);
		out[k++] = n->fd;
		n->fd = -1;
		sf.nfds--;
	}
	return k;
}

static void nd_close_all(const int *fds, size_t k)
{
	for (size_t i = 0; i < k; i++)
		close(fds[i]);
}

/* sf.mu held: n's descriptor is not in use; it may go when the budget is exceeded. */
static void nd_release_locked(struct node *n)
{
	if (nd_closable(n)) {
		sf_link_out(&n->lru);
		sf_link_in(&nd_lru, &n->lru);
	}
}

/* Everything a node holds; it is out of the table and nobody pins it. */
static void nd_free(struct node *n)
{
	lk_free_all(n);
	if (n->fd >= 0) {
		close(n->fd);
		pthread_mutex_lock(&sf.mu);
		sf.nfds--;
		pthread_mutex_unlock(&sf.mu);
	}
	if (n->gen)
		gen_unref(sf.gm, n->gen);
	free(n->handle);
	free(n);
}

int nd_pin(struct node *n)
{
	int victims[16], fd = -1;
	size_t k = 0;

	if (n->is_static)
		return 0;
	pthread_mutex_lock(&sf.mu);
	n->pins++;
	sf_link_out(&n->lru);
	int open = n->fd >= 0;
	pthread_mutex_unlock(&sf.mu);
	if (open)
		return 0;
	if (!n->handle || (fd = nd_open_handle(n)) < 0) {
		int rc = n->handle ? fd : -EBADF;
		nd_unpin(n);
		return rc;
	}
	pthread_mutex_lock(&sf.mu);
	if (n->fd < 0) {           /* else another thread reopened it meanwhile */
		n->fd = fd;
		fd = -1;
		sf.nfds++;
		k = nd_evict(victims, sizeof victims / sizeof victims[0]);
	}
	pthread_mutex_unlock(&sf.mu);
	if (fd >= 0)
		close(fd);
	nd_close_all(victims, k);
	return 0;
}

void nd_unpin(struct node *n)
{
	int victims[16];
	size_t k = 0;

	if (n->is_static)
		return;
	pthread_mutex_lock(&sf.mu);
	int last = !--n->pins, gone = last && n->gone;
	if (last && !gone) {
		nd_release_locked(n);
		k = nd_evict(victims, sizeof victims / sizeof victims[0]);
	}
	pthread_mutex_unlock(&sf.mu);
	nd_close_all(victims, k);
	if (gone)
		nd_free(n);
}

int nd_from_fd(int fd, enum nd_kind kind, struct gen *g, struct fuse_entry_param *e)
{
	struct stat st;
	struct node *n, *fresh = NULL;
	struct file_handle *h;
	int victims[16];
	size_t k = 0;

	if (fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	h = nd_handle_of(fd, st.st_dev, kind);
	pthread_mutex_lock(&sf.mu);
	n = nd_find(g, st.st_dev, st.st_ino);
	if (n && n->fd < 0 && !nd_same_handle(n->handle, h)) {
		/* Its inode was freed while its descriptor was closed, and the number now names
		 * another file: the kernel keeps the old nodeid (it goes stale), this file gets
		 * a node of its own. */
		nd_remove(n);
		n = NULL;
	}
	if (!n) {
		fresh = n = calloc(1, sizeof *n);
		if (!n) {
			pthread_mutex_unlock(&sf.mu);
			close(fd);
			free(h);
			return -ENOMEM;
		}
		n->fd = fd;
		n->handle = h;
		h = NULL;
		sf.nfds++;
		n->dev = st.st_dev;
		n->ino = st.st_ino;
		n->type = st.st_mode & S_IFMT;
		n->kind = kind;
		n->gen = g;
		nd_insert(n);
		if (kind == ND_LIVE && S_ISDIR(n->type) && !sf.o.no_live_cache)
			iv_watch_locked(n);
		iv_node_added();
		fd = -1;
	} else if (n->fd < 0) {
		n->fd = fd;        /* the same file: keep the descriptor just opened */
		fd = -1;
		sf.nfds++;
	}
	n->nlookup++;
	n->used = ++sf.use_clock;
	if (!n->pins)
		nd_release_locked(n);
	k = nd_evict(victims, sizeof victims / sizeof victims[0]);
	pthread_mutex_unlock(&sf.mu);
	nd_close_all(victims, k);
	free(h);
	if (fd >= 0)
		close(fd);
	if (fresh && g)
		gen_ref(sf.gm, g);

	memset(e, 0, sizeof *e);
	e->ino = nd_id(n);
	e->attr = st;
	if (kind == ND_SNAP)
		nd_snap_attr(&e->attr);
	nd_fill_timeouts(n, e);
	return 0;
}

/* Room for one more node: at the budget, ask the kernel to forget some (inval.c) and wait a
 * little for its FORGETs, rather than failing a walk that merely outran the pruning. */
static int nd_budget_wait(void)
{
	struct timespec until;
	int rc = 0;

	if (!sf.node_budget || nd_handles)
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_nsec += 500 * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&sf.mu);
	while (sf.nnodes >= sf.node_budget && !rc) {
		iv_node_added();
		rc = pthread_cond_timedwait(&sf.budget_cv, &sf.mu, &until);
	}
	if (sf.nnodes < sf.node_budget)
		rc = 0;
	pthread_mutex_unlock(&sf.mu);
	return rc ? -EMFILE : 0;
}

int nd_lookup_gen(struct gen *g, const char *name, struct fuse_entry_param *e)
{
	int rc;
	if (gen_dead(g))
		return -ESTALE;
	if ((rc = nd_budget_wait()))
		return rc;
	int fd = openat(gen_fd(g), name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rc = nd_from_fd(fd, ND_SNAP, g, e);
	if (rc == 0 && !strcmp(name, CAP_MANIFEST_NAME)) {
		nd_of(e->ino)->is_manifest = 1;
		nd_manifest_attr(&e->attr);
	}
	/* Every path walk through .snapshot must come back here, so that it may move on to a
	 * newer generation; below this level entries never change. */
	e->entry_timeout = 0;
	return rc;
}

int nd_lookup(struct node *parent, const char *name, struct fuse_entry_param *e)
{
	int rc = nd_check(parent);
	if (rc)
		return rc;
	if (parent->kind == ND_STATUS || parent->kind == ND_SNAPDIR || !S_ISDIR(parent->type))
		return -ENOTDIR;
	if ((rc = nd_budget_wait()))
		return rc;
	if ((rc = nd_pin(parent)))
		return rc;
	int fd = openat(parent->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	rc = -errno;
	nd_unpin(parent);
	if (fd < 0)
		return rc;
	rc = nd_from_fd(fd, parent->kind, parent->gen, e);
	if (rc == 0 && parent->kind == ND_LIVE) {
		iv_mark(nd_of(e->ino), parent);
		nd_fill_timeouts(nd_of(e->ino), e);
		size_t len = strlen(name);
		if (len > 4 && !strcmp(name + len - 4, "-shm"))
			nd_of(e->ino)->is_shm = 1;
	}
	return rc;
}

void nd_forget(struct node *n, uint64_t nlookup)
{
	pthread_mutex_lock(&sf.mu);
	if (n->nlookup < nlookup) {
		log_warn("forget of %" PRIu64 " references on a node with %" PRIu64,
			 (uint64_t)nlookup, (uint64_t)n->nlookup);
		nlookup = n->nlookup;
	}
	n->nlookup -= nlookup;
	int gone = !n->nlookup && !n->is_static;
	if (gone) {
		nd_remove(n);
		iv_unwatch_locked(n);
		sf_link_out(&n->lru);
		if (sf.node_budget && sf.nnodes + 1 >= sf.node_budget)
			pthread_cond_broadcast(&sf.budget_cv);
		if (n->pins) {     /* still in use: the last nd_unpin frees it */
			n->gone = 1;
			gone = 0;
		}
	}
	pthread_mutex_unlock(&sf.mu);
	if (gone)
		nd_free(n);
}

void nd_procpath(const struct node *n, char *buf, size_t len)
{
	snprintf(buf, len, "%d", n->fd);
}

int nd_reopen(struct node *n, int flags)
{
	char p[32];
	int rc = nd_pin(n);
	if (rc)
		return rc;
	nd_procpath(n, p, sizeof p);
	int fd = openat(sf.procfd, p, flags | O_CLOEXEC);
	rc = fd < 0 ? -errno : fd;
	nd_unpin(n);
	return rc;
}

void nd_reclaim(struct gen *g)
{
	int *fds = NULL;
	size_t n = 0, cap = 0;

	pthread_mutex_lock(&sf.mu);
	for (size_t i = 0; i < sf.tabsize; i++)
		for (struct node *m = sf.tab[i]; m; m = m->hnext) {
			/* A closed one holds nothing of the file. */
			if (m->gen != g || !S_ISREG(m->type) || m->fd < 0)
				continue;
			if (n == cap) {
				size_t c = cap ? cap * 2 : 64;
				int *f = realloc(fds, c * sizeof *f);
				if (!f)
					goto scanned;
				fds = f;
				cap = c;
			}
			int fd = fcntl(m->fd, F_DUPFD_CLOEXEC, 0);
			if (fd >= 0)
				fds[n++] = fd;
		}
scanned:
	pthread_mutex_unlock(&sf.mu);
	/* A file whose last name went with the generation is ours alone: nobody can open it
	 * again (its generation is dead), so its blocks can go now rather than whenever the
	 * kernel forgets the node. Files still linked from a newer generation are untouched. */
	for (size_t i = 0; i < n; i++) {
		struct stat st;
		char p[32];
		if (fstat(fds[i], &st) == 0 && st.st_nlink == 0 && st.st_size > 0) {
			snprintf(p, sizeof p, "%d", fds[i]);
			int w = openat(sf.procfd, p, O_WRONLY | O_CLOEXEC);
			if (w >= 0) {
				if (ftruncate(w, 0) < 0)
					log_warn("cannot free a deleted snapshot file: %s", strerror(errno));
				close(w);
			}
		}
		close(fds[i]);
	}
	free(fds);
}
