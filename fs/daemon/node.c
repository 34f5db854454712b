/* The inode table: one node per backing inode the kernel knows, holding an O_PATH
 * descriptor, so every operation is an *at() call relative to it (never a path through the
 * mountpoint, which may cover the store itself).
 *
 * Nodeids are node addresses. Live nodes are keyed by (dev, ino). Snapshot nodes are keyed by
 * (generation, dev, ino): a file shared by hard link between two generations gets one nodeid
 * per generation, so a node always knows which generation it pins, and the kernel never
 * serves one generation's cached pages or attributes under another's name. While a node
 * holds its descriptor the backing inode cannot be freed, so its number is not reused. */
#include "stillfs.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sf sf;

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
			st->st_mode |= rst.st_mode & 0222;
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
	if (fstatat(n->fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
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

int nd_from_fd(int fd, enum nd_kind kind, struct gen *g, struct fuse_entry_param *e)
{
	struct stat st;
	struct node *n, *fresh = NULL;

	if (fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	pthread_mutex_lock(&sf.mu);
	n = nd_find(g, st.st_dev, st.st_ino);
	if (!n) {
		fresh = n = calloc(1, sizeof *n);
		if (!n) {
			pthread_mutex_unlock(&sf.mu);
			close(fd);
			return -ENOMEM;
		}
		n->fd = fd;
		n->dev = st.st_dev;
		n->ino = st.st_ino;
		n->type = st.st_mode & S_IFMT;
		n->kind = kind;
		n->gen = g;
		nd_insert(n);
		if (kind == ND_LIVE && S_ISDIR(n->type) && !sf.o.no_live_cache)
			iv_watch_locked(n);
		iv_node_added();
	}
	n->nlookup++;
	n->used = ++sf.use_clock;
	pthread_mutex_unlock(&sf.mu);
	if (!fresh)
		close(fd);
	else if (g)
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

	if (!sf.node_budget)
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
	int fd = openat(parent->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
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
		if (sf.node_budget && sf.nnodes + 1 >= sf.node_budget)
			pthread_cond_broadcast(&sf.budget_cv);
	}
	pthread_mutex_unlock(&sf.mu);
	if (!gone)
		return;
	lk_free_all(n);
	close(n->fd);
	if (n->gen)
		gen_unref(sf.gm, n->gen);
	free(n);
}

void nd_procpath(const struct node *n, char *buf, size_t len)
{
	snprintf(buf, len, "%d", n->fd);
}

int nd_reopen(const struct node *n, int flags)
{
	char p[32];
	nd_procpath(n, p, sizeof p);
	int fd = openat(sf.procfd, p, flags | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

void nd_reclaim(struct gen *g)
{
	int *fds = NULL;
	size_t n = 0, cap = 0;

	pthread_mutex_lock(&sf.mu);
	for (size_t i = 0; i < sf.tabsize; i++)
		for (struct node *m = sf.tab[i]; m; m = m->hnext) {
			if (m->gen != g || !S_ISREG(m->type))
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
