/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Directory handles. Offsets are the backing directory's telldir cookies, except at the root:
 * there stillfs hides its own names from the store's listing and may add `.snapshot`, which
 * has no cookie of its own, so the root is listed from a private copy indexed 1..n.
 *
 * Opening `.snapshot` chooses a generation (capturing one if need be) and pins it for as long
 * as the handle is open; the handle lists that generation's root. Opening any directory
 * below it pins that directory's generation. */
#include "stillfs.h"

#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct dr_ent {
	char *name;
	ino_t ino;
	unsigned char type;
};

struct dr {
	DIR *dp;
	struct node *node;
	struct gen *gen;           /* the generation pinned by this handle, if any */
	uid_t uid;                 /* charged for its descriptor (sf_fd_charge) ... */
	int charged;               /* ... if set */
	struct sf_link all;        /* in dr_all: every open handle (dr_smu) */
	struct sf_link snap;       /* in dr_snap: open handles of `.snapshot` itself (dr_smu) */
	pid_t tgid;                /* ... and the process that opened it */
	int for_helper;            /* the root, opened by the capture helper: no .snapshot */
	struct dirent *pending;    /* read but not yet returned (it did not fit) */
	off_t off;                 /* offset of pending / of the next readdir */
	struct dr_ent *ents;       /* root only */
	size_t nents;
	size_t charged_bytes;      /* of ents, charged to uid (dr_charge) */
	size_t stream_bytes;       /* of dp, charged to uid (dr_charge) */
};

/* Open handles of `.snapshot` itself. A name looked up below `.snapshot` belongs to the
 * current generation, except for a process that holds `.snapshot` open: it keeps seeing the
 * generation its handle lists (think tar or rsync opening names relative to that handle while
 * someone forces a refresh). */
static pthread_mutex_t dr_smu = PTHREAD_MUTEX_INITIALIZER;
static struct sf_link dr_snap = { &dr_snap, &dr_snap };
/* Every open handle: one the kernel never released (a directory still open when the session
 * ended) stays reachable at exit instead of looking like a leak. */
static struct sf_link dr_all = { &dr_all, &dr_all };

#define DR_OF(link, member) ((struct dr *)(void *)((char *)(link) - offsetof(struct dr, member)))

static void dr_link_in(struct sf_link *list, struct sf_link *l)
{
	pthread_mutex_lock(&dr_smu);
	sf_link_in(list, l);
	pthread_mutex_unlock(&dr_smu);
}

/* Lookups name the calling thread; handles belong to processes. */
static pid_t dr_tgid(pid_t pid)
{
	char path[64], line[128];
	pid_t tgid = pid;
	snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return pid;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "Tgid: %d", &tgid) == 1)
			break;
	fclose(f);
	return tgid;
}

struct gen *dr_snapdir_gen(pid_t pid)
{
	struct gen *g = NULL;
	pthread_mutex_lock(&dr_smu);
	int any = dr_snap.next != &dr_snap;
	pthread_mutex_unlock(&dr_smu);
	if (!any)
		return NULL;
	pid_t tgid = dr_tgid(pid);
	pthread_mutex_lock(&dr_smu);
	for (struct sf_link *l = dr_snap.next; l != &dr_snap; l = l->next) {
		struct dr *d = DR_OF(l, snap);
		if (d->tgid == tgid && !gen_dead(d->gen) &&
		    (!g || gen_seq(d->gen) > gen_seq(g)))
			g = d->gen;
	}
	if (g)
		gen_ref(sf.gm, g);
	pthread_mutex_unlock(&dr_smu);
	return g;
}

/* Memory of root listings, per user. Each handle of the root holds a copy of the store root's
 * names (dr_load_root), as big as the root is: a user who opened the root many times over
 * (up to -o max_user_fds handles) could otherwise make the daemon hold that many copies of a
 * big root - one they filled with long names, if they may write it - until it was killed for
 * lack of memory. A user other than root (or the daemon's own) holds at most DR_USER_BYTES
 * of them, and all of them together DR_ALL_BYTES; past that, a listing of the root fails
 * with ENOMEM. */
#define DR_USER_BYTES (32UL << 20)
#define DR_ALL_BYTES (128UL << 20)
/* Every handle's DIR stream is charged the same way: glibc gives each a buffer of 32 KiB (and
 * the handle's own state is about 1 KiB more), so one user's handles of any directories hold
 * at most DR_USER_BYTES too, about 1,000 of them at once. */
#define DR_STREAM_BYTES (33UL << 10)
struct dr_user {
	uid_t uid;
	size_t bytes;
};
static pthread_mutex_t dr_mmu = PTHREAD_MUTEX_INITIALIZER;
static struct dr_user *dr_users;
static size_t dr_nusers, dr_users_cap, dr_all_bytes;

static struct dr_user *dr_user_of(uid_t uid)
{
	for (size_t i = 0; i < dr_nusers; i++)
		if (dr_users[i].uid == uid)
			return &dr_users[i];
	if (dr_nusers == dr_users_cap) {
		size_t cap = dr_users_cap ? dr_users_cap * 2 : 16;
		struct dr_user *u = realloc(dr_users, cap * sizeof *u);
		if (!u)
			return NULL;
		dr_users = u;
		dr_users_cap = cap;
	}
	dr_users[dr_nusers] = (struct dr_user){ uid, 0 };
	return &dr_users[dr_nusers++];
}

/* Charge n more bytes of d (its root listing, or its stream) to its user, counted in *to:
 * 0 or -ENOMEM. */
static int dr_charge_to(struct dr *d, size_t n, size_t *to)
{
	int rc = 0;
	if (d->uid == 0 || d->uid == sf.uid)
		return 0;
	pthread_mutex_lock(&dr_mmu);
	struct dr_user *u = dr_user_of(d->uid);
	if (!u || u->bytes + n > DR_USER_BYTES || dr_all_bytes + n > DR_ALL_BYTES) {
		rc = -ENOMEM;
	} else {
		u->bytes += n;
		dr_all_bytes += n;
		*to += n;
	}
	pthread_mutex_unlock(&dr_mmu);
	return rc;
}

static int dr_charge(struct dr *d, size_t n)
{
	return dr_charge_to(d, n, &d->charged_bytes);
}

static void dr_uncharge_from(struct dr *d, size_t *from)
{
	if (!*from)
		return;
	pthread_mutex_lock(&dr_mmu);
	struct dr_user *u = dr_user_of(d->uid);
	if (u)
		u->bytes -= *from;
	dr_all_bytes -= *from;
	pthread_mutex_unlock(&dr_mmu);
	*from = 0;
}

static void dr_uncharge(struct dr *d)
{
	dr_uncharge_from(d, &d->charged_bytes);
}

static void dr_free_ents(struct dr *d)
{
	for (size_t i = 0; i < d->nents; i++)
		free(d->ents[i].name);
	free(d->ents);
	d->ents = NULL;
	d->nents = 0;
	dr_uncharge(d);
}

static void dr_free(struct dr *d)
{
	pthread_mutex_lock(&dr_smu);
	sf_link_out(&d->snap);
	sf_link_out(&d->all);
	pthread_mutex_unlock(&dr_smu);
	if (d->dp)
		closedir(d->dp);
	if (d->charged)
		sf_fd_uncharge(d->uid);
	dr_free_ents(d);
	dr_uncharge_from(d, &d->stream_bytes);
	free(d);
}

static void dr_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n = nd_of(ino);
	struct dr *d = NULL;
	struct gen *g = NULL;
	int fd = -1, pinned = 0;
	int rc = nd_check(n);

	if (!rc && (n->kind == ND_STATUS || !S_ISDIR(n->type)))
		rc = -ENOTDIR;
	if (!rc && n->kind == ND_SNAPDIR && !(g = dr_snapdir_gen(fuse_req_ctx(req)->pid)))
		rc = gen_acquire(sf.gm, &g);       /* a reference of our own */
	else if (!rc && n->kind == ND_SNAP)
		gen_ref(sf.gm, g = n->gen);
	if (!rc && g && !(rc = gen_pin(sf.gm, g, 0)))
		pinned = 1;
	if (rc)
		goto out;
	if (!(d = calloc(1, sizeof *d))) {
		rc = -ENOMEM;
		goto out;
	}
	d->node = n;
	d->gen = g;
	dr_link_in(&dr_all, &d->all);
	d->for_helper = n == &sf.root && hp_is_helper(fuse_req_ctx(req)->pid);
	d->uid = fuse_req_ctx(req)->uid;
	if ((rc = sf_fd_charge(d->uid)))
		goto out;
	d->charged = 1;
	if ((rc = dr_charge_to(d, DR_STREAM_BYTES, &d->stream_bytes)))
		goto out;
	if ((rc = nd_pin(n)))
		goto out;
	fd = openat(n->kind == ND_SNAPDIR ? gen_fd(g) : n->fd, ".",
		    O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	rc = fd < 0 ? -errno : 0;
	nd_unpin(n);
	if (rc || !(d->dp = fdopendir(fd))) {
		rc = rc ? rc : -errno;
		goto out;
	}
	fd = -1;
	if (n->kind == ND_SNAPDIR) {
		d->tgid = dr_tgid(fuse_req_ctx(req)->pid);
		dr_link_in(&dr_snap, &d->snap);
	}
	if (n->kind == ND_SNAP) {
		/* Immutable: let the kernel cache the listing. */
		fi->cache_readdir = 1;
		fi->keep_cache = 1;
	}
	fi->fh = (uintptr_t)d;
	if (fuse_reply_open(req, fi) == 0)
		return;
	/* Interrupted: the kernel will not send releasedir. */
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	if (d)
		dr_free(d);
	if (pinned)
		gen_unpin(sf.gm, g, 0);
	if (g)
		gen_unref(sf.gm, g);
	if (rc)
		fuse_reply_err(req, -rc);
}

static int dr_load_root_ents(struct dr *d);

/* The root's listing, anew; on failure nothing is kept (nor charged). */
static int dr_load_root(struct dr *d)
{
	int rc = dr_load_root_ents(d);
	if (rc)
		dr_free_ents(d);
	return rc;
}

static int dr_load_root_ents(struct dr *d)
{
	struct dirent *de;
	size_t cap = 0;

	dr_free_ents(d);
	rewinddir(d->dp);
	for (;;) {
		errno = 0;
		de = readdir(d->dp);
		if (!de)
			break;
		if (sf_reserved(de->d_name))
			continue;
		if (d->nents + 1 >= cap) {
			size_t c = cap ? cap * 2 : 64;
			int rc = dr_charge(d, (c - cap) * sizeof(struct dr_ent));
			if (rc)
				return rc;
			struct dr_ent *e = realloc(d->ents, c * sizeof *e);
			if (!e)
				return -ENOMEM;
			d->ents = e;
			cap = c;
		}
		struct dr_ent *e = &d->ents[d->nents];
		/* malloc's own overhead too: a short name takes 32 bytes */
		int rc = dr_charge(d, (strlen(de->d_name) + 1 + 16 + 15) & ~(size_t)15);
		if (rc)
			return rc;
		if (!(e->name = strdup(de->d_name)))
			return -ENOMEM;
		e->ino = de->d_ino;
		e->type = de->d_type;
		d->nents++;
	}
	if (errno)
		return -errno;
	if (sf.o.snapdir_visible && !d->for_helper) {
		if (d->nents + 1 > cap) {
			struct dr_ent *e = realloc(d->ents, (d->nents + 1) * sizeof *e);
			if (!e)
				return -ENOMEM;
			d->ents = e;
		}
		struct dr_ent *e = &d->ents[d->nents];
		if (!(e->name = strdup(SF_SNAPDIR)))
			return -ENOMEM;
		e->ino = sf.snapdir.ino;
		e->type = DT_DIR;
		d->nents++;
	}
	return 0;
}

static int dr_is_dot(const char *name)
{
	return name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2]));
}

/* Add one entry; 1 if it did not fit, 0 if added, -ENOENT if it is gone (a raced deletion,
 * skipped by the caller). */
static int dr_add(fuse_req_t req, struct dr *d, int plus, char *buf, size_t *used,
		  size_t size, const char *name, ino_t ino, unsigned char type, off_t next)
{
	struct node *dir = d->node;
	size_t len;
	if (!plus) {
		struct stat st = { .st_ino = ino, .st_mode = (mode_t)type << 12 };
		len = fuse_add_direntry(req, buf + *used, size - *used, name, &st, next);
		if (len > size - *used)
			return 1;
		*used += len;
		return 0;
	}
	struct fuse_entry_param e;
	memset(&e, 0, sizeof e);
	if (dr_is_dot(name) || (dir == &sf.root && !strcmp(name, SF_SNAPDIR))) {
		/* No lookup: a listing must not capture a generation, and "." and ".." are the
		 * kernel's business. Nodeid 0 tells the kernel to make no entry. */
		e.attr.st_ino = ino;
		e.attr.st_mode = (mode_t)type << 12;
	} else {
		int rc = dir->kind == ND_SNAPDIR ? nd_lookup_gen(d->gen, name, &e)
						 : nd_lookup(dir, name, &e);
		if (rc == -ENOENT)
			return rc;
		if (rc) {
			/* An entry we cannot look up (a mount in the store that we may not enter or
			 * whose daemon died) must not end the listing for everyone: list its name
			 * with no node, and the caller's own lookup of it gets the error. */
			memset(&e, 0, sizeof e);
			e.attr.st_ino = ino;
			e.attr.st_mode = (mode_t)type << 12;
		}
	}
	len = fuse_add_direntry_plus(req, buf + *used, size - *used, name, &e, next);
	if (len > size - *used) {
		if (e.ino)
			nd_forget(nd_of(e.ino), 1);
		return 1;
	}
	*used += len;
	return 0;
}

static void dr_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi, int plus)
{
	struct dr *d = (struct dr *)(uintptr_t)fi->fh;
	size_t used = 0;
	int rc = d->gen && gen_dead(d->gen) ? -ESTALE : nd_check(d->node);
	char *buf = NULL;

	if (rc)
		goto out;
	if (!(buf = malloc(size))) {
		rc = -ENOMEM;
		goto out;
	}
	if (d->node == &sf.root) {
		if (off == 0 || !d->ents)
			rc = dr_load_root(d);
		for (size_t i = (size_t)off; !rc && i < d->nents; i++) {
			struct dr_ent *e = &d->ents[i];
			rc = dr_add(req, d, plus, buf, &used, size, e->name, e->ino, e->type,
				    (off_t)i + 1);
			if (rc == -ENOENT) {
				rc = 0;
			} else if (rc == 1) {
				rc = 0;
				break;
			}
		}
		goto out;
	}
	if (off != d->off) {
		seekdir(d->dp, off);
		d->pending = NULL;
		d->off = off;
	}
	for (;;) {
		if (!d->pending) {
			errno = 0;
			d->pending = readdir(d->dp);
			if (!d->pending) {
				rc = -errno;
				break;
			}
		}
		struct dirent *de = d->pending;
		rc = dr_add(req, d, plus, buf, &used, size, de->d_name, de->d_ino,
			    de->d_type, de->d_off);
		if (rc == 1) {
			rc = 0;
			break;
		}
		if (rc && rc != -ENOENT)
			break;
		rc = 0;
		d->pending = NULL;
		d->off = de->d_off;
	}
out:
	/* An error after some entries is reported on the next call, with nothing added. */
	if (rc && used == 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_buf(req, buf, used);
	free(buf);
}

static void dr_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	dr_read(req, ino, size, off, fi, 0);
}

static void dr_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	dr_read(req, ino, size, off, fi, 1);
}

static void dr_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dr *d = (struct dr *)(uintptr_t)fi->fh;
	struct gen *g = d->gen;
	dr_free(d);
	if (g) {
		gen_unpin(sf.gm, g, 0);
		gen_unref(sf.gm, g);
	}
	fuse_reply_err(req, 0);
}

static void dr_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct dr *d = (struct dr *)(uintptr_t)fi->fh;
	int rc = 0;
	if (d->node->kind == ND_LIVE && (datasync ? fdatasync(dirfd(d->dp)) : fsync(dirfd(d->dp))) < 0)
		rc = errno;
	fuse_reply_err(req, rc);
}

void dr_register(struct fuse_lowlevel_ops *ops)
{
	ops->opendir = dr_opendir;
	ops->readdir = dr_readdir;
	ops->readdirplus = dr_readdirplus;
	ops->releasedir = dr_releasedir;
	ops->fsyncdir = dr_fsyncdir;
}
