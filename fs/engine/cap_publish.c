/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Capture, step 5, publishing: the staging directory beside DEST (cap_prepare_dest, and what
 * killed captures left there), the times uploaders compare (cap_set_times), the other names of
 * hard links, the directories, the manifest (cap_write_manifest, written through manifest.h),
 * and the rename that makes the snapshot appear whole (cap_publish). */
#include "cap_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The whole second a file that changed is dated in: the cut's. S3 keeps LastModified in whole
 * seconds, truncated: an upload of this snapshot comes after the cut, so its LastModified is
 * at least this second and the next sync does not send the file again; an upload of an earlier
 * snapshot came before uploads_before, which the cut's second is after (cap_settle waits for
 * that; or with cap_opts.date_ahead this is that second, and the caller holds reads until it
 * comes: cap_stats.dated_until), so this mtime is newer and the file is sent. rsync compares
 * whole seconds too: a new second also tells it the file changed. prev_sec: the previous
 * snapshot's file's second, or INT64_MIN. Notes the latest second given in dated_until. */
static int64_t cap_changed_sec(struct cap *c, int64_t prev_sec)
{
	int64_t sec = c->cut_ns / 1000000000LL;
	int64_t after = (int64_t)floor(c->uploads_before) + 1;
	if (sec < after)
		sec = after; /* the clock was stepped back (cap_settle) */
	if (prev_sec >= sec)
		sec = prev_sec + 1; /* only after a clock step back */
	if (c->o->redate_until > c->o->redate_after && sec <= c->o->redate_until)
		sec = c->o->redate_until + 1; /* idem: uploads_before covers it */
	if (sec >= INT64_MAX / 1000000000LL) /* a previous mtime past 2262 */
		sec = INT64_MAX / 1000000000LL - 1;
	if (sec > c->st->dated_until)
		c->st->dated_until = sec;
	return sec;
}

/* 1 if the name `a` of the file copied as p held the same bytes (kind, size, digest, mode and
 * owner) in the previous snapshot; pe_sec: the second of that copy's mtime, if any. */
static int cap_name_same(const struct cap *c, const struct ent *a, const struct ent *p,
			 int64_t *pe_sec)
{
	const struct mf_entry *pe = c->have_prev ? mf_find(&c->prev, a->path) : NULL;
	*pe_sec = pe ? pe->mtime_ns / 1000000000LL : INT64_MIN;
	return pe && pe->kind == p->kind && pe->has_digest && p->has_digest &&
	       pe->size == p->size && !memcmp(pe->digest, p->digest, 32) &&
	       pe->mode == (a->st.st_mode & 07777) && pe->uid == a->st.st_uid &&
	       pe->gid == a->st.st_gid;
}

/* p is to be dated anew: if its staged copy is the previous snapshot's file, shared, make it a
 * copy of its own (the previous snapshot keeps its date). 0 or -errno. */
static int cap_newdate(struct cap *c, struct ent *p)
{
	if (p->alias)
		p = &c->e[p->alias];
	if ((p->kind != K_FILE && p->kind != K_DB) || p->newdate)
		return 0;
	p->newdate = 1;
	if (!p->reused)
		return 0;
	int src = openat(c->stagefd, p->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	struct cp_result r;
	int rc = src < 0 ? -errno : cap_copy_fd_to_stage(c, src, p->path, 0, &r);
	if (src >= 0)
		close(src);
	int fd = rc ? -1 : openat(c->stagefd, p->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0) {
		cap_apply_owner(fd, &p->st);
		close(fd);
	}
	if (rc)
		return rc;
	c->st->bytes_linked -= p->size < c->st->bytes_linked ? p->size : c->st->bytes_linked;
	c->st->bytes_copied += r.written;
	p->written = r.written;
	p->reused = 0;
	return 0;
}

static int cap_newdate_entry(struct cap *c, size_t i, int depth);

/* What the symlink e leads to inside the snapshot is dated anew: uploaders that follow links
 * (aws s3 sync does by default) send the target's bytes under the link's name and compare the
 * target's mtime, so a link turned to an unchanged file of the same size would keep the old
 * bytes under its name. Targets outside the snapshot (absolute, or above its root) are not
 * ours. Each link is followed once (newdate marks it). 0 or -errno. */
static int cap_newdate_link(struct cap *c, struct ent *e, int depth)
{
	char t[PATH_MAX + 1], path[PATH_MAX * 2 + 2], *save = NULL;
	size_t idx, len = 0;
	if (e->newdate || depth > 40)
		return 0;
	e->newdate = 1;
	ssize_t n = readlinkat(c->stagefd, e->path, t, PATH_MAX);
	if (n <= 0 || t[0] == '/')
		return 0;
	t[n] = 0;
	/* The link's directory, then each component of the target. */
	const char *slash = strrchr(e->path, '/');
	if (slash) {
		len = (size_t)(slash - e->path);
		memcpy(path, e->path, len);
	}
	path[len] = 0;
	for (char *comp = strtok_r(t, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
		if (!strcmp(comp, "."))
			continue;
		if (!strcmp(comp, "..")) {
			if (!len)
				return 0; /* above the snapshot's root */
			char *up = strrchr(path, '/');
			len = up ? (size_t)(up - path) : 0;
			path[len] = 0;
			continue;
		}
		size_t cl = strlen(comp);
		if (len + 1 + cl >= sizeof path)
			return 0;
		if (len)
			path[len++] = '/';
		memcpy(path + len, comp, cl + 1);
		len += cl;
		/* a link on the way is followed by the kernel too: what it leads to counts */
		if (cap_index_get(c, path, &idx) && c->e[idx].kind == K_LINK && save && *save) {
			int rc = cap_newdate_link(c, &c->e[idx], depth + 1);
			if (rc)
				return rc;
		}
	}
	if (!len)
		return cap_newdate_entry(c, 0, depth + 1);
	return cap_index_get(c, path, &idx) ? cap_newdate_entry(c, idx, depth + 1) : 0;
}

/* Entry i, and for a directory everything below it, reached through a link: dated anew. */
static int cap_newdate_entry(struct cap *c, size_t i, int depth)
{
	struct ent *e = &c->e[i];
	if (e->kind == K_LINK)
		return cap_newdate_link(c, e, depth);
	if (e->kind != K_DIR)
		return cap_newdate(c, e);
	if (e->newdate)
		return 0; /* its files are marked already */
	e->newdate = 1;
	size_t len = strlen(e->path);
	for (size_t k = 1; k < c->n; k++) {
		struct ent *f = &c->e[k];
		if (k == i || (len && (strncmp(f->path, e->path, len) || f->path[len] != '/')))
			continue;
		int rc = f->kind == K_LINK ? cap_newdate_link(c, f, depth) :
			 f->kind == K_DIR ? 0 : cap_newdate(c, f);
		if (rc)
			return rc;
	}
	return 0;
}

/* Which files are dated anew whatever their own bytes, because a name that reaches them now
 * held other bytes before (or none):
 * - A file with several names is one inode in the snapshot, with one mtime. When one of its
 *   other names held other bytes before (it became a link to this file: `ln -f x y`), the
 *   mtime of the file's earlier copy would date new bytes under that name in an old second,
 *   and uploaders would skip it.
 * - A symlink new or turned elsewhere: what it leads to (cap_newdate_link).
 * 0 or -errno. */
static int cap_mark_newdates(struct cap *c)
{
	int64_t sec;
	int rc = 0;
	for (size_t i = 0; !rc && i < c->n; i++) {
		struct ent *a = &c->e[i];
		if (a->kind == K_FILE && a->alias && !cap_name_same(c, a, &c->e[a->alias], &sec))
			rc = cap_newdate(c, &c->e[a->alias]);
	}
	/* (With no previous snapshot every file is dated anew anyway.) */
	for (size_t i = 0; !rc && c->have_prev && i < c->n; i++) {
		struct ent *l = &c->e[i];
		if (l->kind != K_LINK || l->newdate)
			continue;
		const struct mf_entry *pe = c->have_prev ? mf_find(&c->prev, l->path) : NULL;
		if (!pe || pe->kind != K_LINK || !pe->has_digest || !l->has_digest ||
		    memcmp(pe->digest, l->digest, 32))
			rc = cap_newdate_link(c, l, 0);
	}
	return rc;
}

/* A copied file whose bytes equal the previous snapshot's keeps the previous file, or at least
 * its mtime, so uploaders skip it. Everything else new gets the cut time as mtime: later than
 * any upload of an earlier snapshot, so neither rsync nor aws s3 sync skips it. */
static int cap_set_times(struct cap *c)
{
	int rc = cap_mark_newdates(c);
	if (rc)
		return rc;
	for (size_t i = 0; i < c->n; i++) {
		struct ent *e = &c->e[i];
		if ((e->kind != K_FILE && e->kind != K_DB) || !e->copied || e->reused || e->alias)
			continue;
		const struct mf_entry *pe = c->have_prev ? mf_find(&c->prev, e->path) : NULL;
		int keep = 0;
		if (pe && !e->newdate && pe->kind == e->kind && pe->has_digest && e->has_digest &&
		    pe->size == e->size && !memcmp(pe->digest, e->digest, 32) &&
		    pe->mode == (e->st.st_mode & 07777) && pe->uid == e->st.st_uid &&
		    pe->gid == e->st.st_gid) {
			uint64_t was = e->written;
			int recorded;
			int lr = cap_link_prev(c, e, pe, &recorded);
			if (lr == 0) {
				/* it was copied, then found equal and shared instead */
				c->st->bytes_copied -= was < c->st->bytes_copied ? was : c->st->bytes_copied;
				if (e->cloned || (e->d && e->d->cloned)) {
					uint64_t cl = c->st->bytes_cloned;
					c->st->bytes_cloned -= e->size < cl ? e->size : cl;
				}
				continue;
			}
			/* These are the bytes uploaded before, so the same mtime, when the previous
			 * file is as its manifest says but could not be shared (EMLINK: at its file
			 * system's link limit), or when it is this one's old copy, moved here after it
			 * was checked to be as its manifest says (cap_earlier_copy). */
			keep = (recorded || (lr == -ENOENT && e->d && e->d->took_prev)) &&
			       !cap_redate(c, pe);
		}
		int64_t ns;
		if (keep)
			ns = pe->mtime_ns;
		else
			ns = cap_changed_sec(c, pe ? pe->mtime_ns / 1000000000LL : INT64_MIN) *
			     1000000000LL;
		e->mtime_ns = ns;
		struct timespec t = ut_ns_ts(ns), ts[2] = { t, t };
		if (utimensat(c->stagefd, e->path, ts, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
	}
	/* A name dated anew must also differ from what its own earlier copy was dated (after a
	 * clock step back, that can be later than the cut). */
	for (size_t i = 0; i < c->n; i++) {
		struct ent *a = &c->e[i];
		int64_t sec;
		if (a->kind != K_FILE || !a->alias || !c->e[a->alias].newdate)
			continue;
		struct ent *p = &c->e[a->alias];
		if (cap_name_same(c, a, p, &sec) || sec < p->mtime_ns / 1000000000LL)
			continue;
		p->mtime_ns = cap_changed_sec(c, sec) * 1000000000LL;
		struct timespec t = ut_ns_ts(p->mtime_ns), ts[2] = { t, t };
		if (utimensat(c->stagefd, p->path, ts, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
	}
	return 0;
}

/* Every other name of a file copied once becomes a hard link to that copy, as in the store.
 * Where a link cannot be made (the link limit of the file system), it gets a copy of the copy. */
static int cap_link_aliases(struct cap *c)
{
	for (size_t i = 0; i < c->n; i++) {
		struct ent *e = &c->e[i];
		if (e->kind != K_FILE || !e->alias)
			continue;
		const struct ent *p = &c->e[e->alias];
		unlinkat(c->stagefd, e->path, 0);
		if (linkat(c->stagefd, p->path, c->stagefd, e->path, 0) < 0) {
			struct cp_result r;
			int src = openat(c->stagefd, p->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			int rc = src < 0 ? -errno : cap_copy_fd_to_stage(c, src, e->path, 0, &r);
			if (src >= 0)
				close(src);
			struct timespec t = ut_ns_ts(p->mtime_ns), ts[2] = { t, t };
			int fd = rc ? -1 : openat(c->stagefd, e->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			if (fd >= 0) {
				cap_apply_owner(fd, &e->st);
				if (futimens(fd, ts) < 0)
					rc = -errno;
				close(fd);
			}
			if (rc)
				return rc;
		}
		e->size = p->size;
		e->has_digest = p->has_digest;
		memcpy(e->digest, p->digest, 32);
		e->mtime_ns = p->mtime_ns;
		/* (a plain file's: only databases have one of text, and those have no alias) */
		cap_clear_ident(e);
		e->has_id = p->has_id;
		e->id = p->id;
	}
	return 0;
}

static int cap_finish_dirs(struct cap *c)
{
	/* Deepest first, so that read-only modes do not get in the way of their children; the
	 * root last of all, after the manifest is written (cap_finish_root). */
	for (size_t k = c->n; k-- > 1;) {
		struct ent *e = &c->e[k];
		if (e->kind == K_LINK) {
			struct timespec ts[2] = { e->st.st_atim, e->st.st_mtim };
			utimensat(c->stagefd, e->path, ts, AT_SYMLINK_NOFOLLOW);
			continue;
		}
		if (e->kind != K_DIR)
			continue;
		int fd = openat(c->stagefd, e->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		cap_apply_owner(fd, &e->st);
		struct timespec ts[2] = { e->st.st_atim, e->st.st_mtim };
		futimens(fd, ts);
		e->mtime_ns = cap_ns(e->st.st_mtim);
		close(fd);
	}
	return 0;
}

static void cap_finish_root(struct cap *c)
{
	struct ent *e = &c->e[0];
	struct timespec ts[2] = { e->st.st_atim, e->st.st_mtim };
	cap_apply_owner(c->stagefd, &e->st);
	futimens(c->stagefd, ts);
}

/* The entries a manifest lists, as cap_write_manifest gives them to mf_write_each: c's entries
 * at order[0..n), in path order. */
struct cap_listing {
	const struct cap *c;
	uint32_t *order;
	char id[CAP_ID_MAX];     /* the identity of the entry given last */
};

static int cap_by_path(const void *a, const void *b, void *arg)
{
	const struct cap *c = arg;
	return strcmp(c->e[*(const uint32_t *)a].path, c->e[*(const uint32_t *)b].path);
}

static void cap_listed(void *arg, size_t i, struct mf_entry *me)
{
	struct cap_listing *l = arg;
	const struct cap *c = l->c;
	const struct ent *e = &c->e[l->order[i]];
	const struct mf_entry *pe;
	*me = (struct mf_entry){
		.kind = e->kind, .mode = e->st.st_mode & 07777, .uid = e->st.st_uid,
		.gid = e->st.st_gid, .size = e->kind == K_DIR ? 0 : e->size,
		.mtime_ns = e->mtime_ns, .has_digest = e->has_digest,
		.ident = cap_ident_of(e, l->id),
		.path = e->path,
	};
	memcpy(me->digest, e->digest, 32);
	if (e->kind == K_DB && e->staged && e->d->blk.size == e->size &&
	    dd_all_valid(&e->d->blk))
		me->blocks = e->d->blk.d;
	else if (e->kind == K_DB && e->reused && c->have_prev &&
		 (pe = mf_find(&c->prev, e->path)))
		me->blocks = pe->blocks;
}

/* The manifest lists every entry kept, with the block digests of the database copies that
 * have them: the next --previous or --recycle capture starts from those copies. It is written
 * straight from the entries, in the order of their paths. */
static int cap_write_manifest(struct cap *c)
{
	struct cap_listing l = { .c = c };
	size_t n = 0;
	int rc;
	if (c->n > UINT32_MAX || !(l.order = malloc(c->n * sizeof *l.order)))
		return -ENOMEM;
	for (size_t i = 1; i < c->n; i++) {
		char k = c->e[i].kind;
		if (k == K_DIR || k == K_FILE || k == K_DB || k == K_LINK)
			l.order[n++] = (uint32_t)i;
	}
	qsort_r(l.order, n, sizeof *l.order, cap_by_path, c);
	/* It names every entry and holds every file's digest, and a short secret's digest gives
	 * it away: readable by whoever made the snapshot only (the daemon serves it to the store's
	 * owner). Also, a later capture builds on it only while it is theirs (cap_load_earlier). */
	int fd = openat(c->stagefd, CAP_MANIFEST_NAME, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0400);
	FILE *f = fd < 0 ? NULL : fdopen(fd, "w");
	if (!f) {
		rc = fd < 0 ? -errno : -ENOMEM;
		if (fd >= 0)
			close(fd);
		free(l.order);
		return rc;
	}
	rc = mf_write_each(f, c->st, n, cap_listed, &l);
	free(l.order);
	if (fflush(f) == EOF && !rc)
		rc = -errno;
	/* It changes with every snapshot: dated like every other changed file (after a clock step
	 * back, not in the cut's second, or aws s3 sync would keep the previous manifest). */
	struct stat pst;
	int64_t psec = c->have_prev && fstatat(c->prevfd, CAP_MANIFEST_NAME, &pst,
					       AT_SYMLINK_NOFOLLOW) == 0 ?
			       (int64_t)pst.st_mtim.tv_sec : INT64_MIN;
	time_t sec = (time_t)cap_changed_sec(c, psec);
	struct timespec ts[2] = { { sec, 0 }, { sec, 0 } };
	if (!rc && futimens(fileno(f), ts) < 0)
		rc = -errno;
	if (fclose(f) == EOF && !rc)
		rc = -errno;
	return rc;
}

static void cap_make_id(struct cap_stats *st)
{
	struct tm tm;
	char when[32];
	unsigned char rnd[4] = { 0 };
	gmtime_r(&st->cut.tv_sec, &tm);
	strftime(when, sizeof when, "%Y%m%dT%H%M%S", &tm);
	if (getentropy(rnd, sizeof rnd) < 0)
		memcpy(rnd, &st->cut.tv_nsec, sizeof rnd);
	snprintf(st->id, sizeof st->id, "%s.%03ldZ-%02x%02x%02x%02x", when,
		 st->cut.tv_nsec / 1000000, rnd[0], rnd[1], rnd[2], rnd[3]);
}


/* 1 if the directory dirfd is the store or lies below it. */
int cap_inside_store(const struct cap *c, int dirfd)
{
	struct stat sst, pst;
	int inside = 0;
	if (fstat(c->storefd, &sst) < 0)
		return 0;
	int fd = dup(dirfd);
	while (fd >= 0 && fstat(fd, &pst) == 0) {
		if (ut_same_file(&pst, &sst)) {
			inside = 1;
			break;
		}
		int up = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		struct stat ust;
		if (up < 0 || (fstat(up, &ust) == 0 && ut_same_file(&ust, &pst))) {
			if (up >= 0)
				close(up);
			break;
		}
		close(fd);
		fd = up;
	}
	if (fd >= 0)
		close(fd);
	return inside;
}

/* Remove what captures of the same DEST that were killed (SIGKILL: no cleanup ran) left beside
 * it: ".BASE.stillfs-tmp.PID" and ".BASE.stillfs-work.PID" of a process that is gone. Unless
 * `remove`: then each is only named, to be removed by hand (it may be as big as the store). */
static void cap_remove_leftovers(int parentfd, const char *base, int remove)
{
	char pfx[2][NAME_MAX + 1];
	snprintf(pfx[0], sizeof pfx[0], ".%.200s.stillfs-tmp.", base);
	snprintf(pfx[1], sizeof pfx[1], ".%.200s.stillfs-work.", base);
	int fd = dup(parentfd);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		for (unsigned k = 0; k < 2; k++) {
			size_t n = strlen(pfx[k]);
			char *end;
			if (strncmp(de->d_name, pfx[k], n) || !de->d_name[n])
				continue;
			long pid = strtol(de->d_name + n, &end, 10);
			if (*end || pid <= 0 || pid == getpid() ||
			    kill((pid_t)pid, 0) == 0 || errno != ESRCH)
				continue;
			if (!remove) {
				log_warn("%s, left beside the snapshot by a capture that was killed, is "
					 "kept (others may rename things in its directory): remove it "
					 "by hand", de->d_name);
				continue;
			}
			log_info("removing %s, left by a capture that was killed", de->d_name);
			cp_rmtree(parentfd, de->d_name);
		}
	}
	closedir(d);
}

/* The directory name in dirfd, just made by us with mode 0700: opened without following a
 * symlink, and only if it is still ours, writable by nobody else, and empty. Its descriptor,
 * or -errno. */
static int cap_own_new_dir(int dirfd, const char *name)
{
	struct stat st;
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = fstat(fd, &st) < 0 ? -errno : 0;
	/* (Writable by no one else: a default ACL of the parent that lets others write in
	 * it shows in the group bits, and is refused as well.) */
	if (!rc && (st.st_uid != geteuid() || (st.st_mode & 0022)))
		rc = -EPERM;
	int dup_fd = rc ? -1 : dup(fd);
	DIR *d = dup_fd < 0 ? NULL : fdopendir(dup_fd);
	if (!rc && !d)
		rc = -errno;
	for (struct dirent *de; !rc && (de = readdir(d));)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			rc = -ENOTEMPTY;
	if (d)
		closedir(d);
	else if (dup_fd >= 0)
		close(dup_fd);
	if (rc) {
		close(fd);
		return rc;
	}
	return fd;
}

int cap_prepare_dest(struct cap *c)
{
	char *dup1 = strdup(c->o->dest), *dup2 = strdup(c->o->dest);
	int rc = 0;
	if (!dup1 || !dup2) {
		rc = -ENOMEM;
		goto out;
	}
	/* The snapshot is built beside DEST and renamed onto it, so it appears whole or not. */
	char *base = basename(dup1), *dir = dirname(dup2);
	if (!base[0] || !strcmp(base, "/") || !strcmp(base, ".") || !strcmp(base, "..")) {
		log_err("%s: not a usable snapshot name", c->o->dest);
		rc = -EINVAL;
		goto out;
	}
	c->parentfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->parentfd < 0) {
		rc = -errno;
		log_err("%s: %s", dir, strerror(errno));
		goto out;
	}
	struct stat st;
	if (fstatat(c->parentfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		log_err("%s already exists", c->o->dest);
		rc = -EEXIST;
		goto out;
	}
	/* Refuse a destination inside the store: the snapshot would contain itself. */
	if (cap_inside_store(c, c->parentfd)) {
		log_err("%s is inside the store %s", c->o->dest, c->o->store);
		rc = -EINVAL;
		goto out;
	}
	if (strlen(base) > NAME_MAX) {
		log_err("%s: name too long", c->o->dest);
		rc = -ENAMETOOLONG;
		goto out;
	}
	snprintf(c->dest_name, sizeof c->dest_name, "%s", base);
	snprintf(c->stage_name, sizeof c->stage_name, ".%.200s.stillfs-tmp.%d", base, (int)getpid());
	snprintf(c->work_name, sizeof c->work_name, ".%.200s.stillfs-work.%d", base, (int)getpid());
	/* What killed captures left, by name: only where nobody else may rename things in,
	 * or another user could have root delete what they name so (an earlier snapshot they
	 * may not delete). Elsewhere it stays, and a name of ours already taken fails below. */
	if (!fstat(c->parentfd, &st) && (st.st_uid == 0 || st.st_uid == geteuid()) &&
	    (!(st.st_mode & 0022) || (st.st_mode & S_ISVTX))) {
		cp_rmtree(c->parentfd, c->stage_name);
		cp_rmtree(c->parentfd, c->work_name);
		cap_remove_leftovers(c->parentfd, base, 1);
	} else {
		cap_remove_leftovers(c->parentfd, base, 0);
	}
	if (mkdirat(c->parentfd, c->stage_name, 0700) < 0 ||
	    mkdirat(c->parentfd, c->work_name, 0700) < 0) {
		rc = -errno;
		log_err("cannot create the snapshot beside %s: %s", c->o->dest, strerror(errno));
		goto out;
	}
	/* DEST's directory may be another user's (an uploader's), who may rename what we just
	 * made and put a symlink or a directory of theirs in its place: everything below these
	 * two descriptors is written as we are, by relative paths, so each must be the empty
	 * directory we made, ours, which nobody else can change. */
	c->stagefd = cap_own_new_dir(c->parentfd, c->stage_name);
	c->workfd = c->stagefd < 0 ? -1 : cap_own_new_dir(c->parentfd, c->work_name);
	if (c->stagefd < 0 || c->workfd < 0) {
		rc = c->stagefd < 0 ? c->stagefd : c->workfd;
		log_err("%s: the directory made beside it to build the snapshot in was replaced (%s)",
			c->o->dest, strerror(-rc));
	}
out:
	free(dup1);
	free(dup2);
	return rc;
}

/* The cut holds and no event matters any more: finish the staged tree, write its manifest and
 * rename it onto DEST, where it appears whole. 0, or -errno with a line logged. */
int cap_publish(struct cap *c, double t0)
{
	c->st->cut.tv_sec = c->cut_ns / 1000000000LL;
	c->st->cut.tv_nsec = c->cut_ns % 1000000000LL;
	cap_make_id(c->st);
	int rc = cap_collect_all(c); /* copies made during the last attempt */
	if (!rc)
		rc = cap_db_finish(c);
	if (!rc)
		rc = cap_set_times(c);
	if (!rc)
		rc = cap_link_aliases(c);
	if (!rc)
		rc = cap_finish_dirs(c);
	if (rc) {
		log_err("cannot finish the snapshot: %s", strerror(-rc));
		return rc;
	}
	for (size_t i = 0; i < c->n; i++)
		if (c->e[i].kind == K_FILE || c->e[i].kind == K_DB)
			c->st->files++;
	c->st->duration_s = ut_now() - t0;
	c->st->threads = cp_hashers();
	rc = cap_write_manifest(c);
	if (!rc)
		cap_finish_root(c);
	if (!rc && c->o->sync && syncfs(c->stagefd) < 0)
		rc = -errno;
	if (rc) {
		log_err("cannot write the manifest: %s", strerror(-rc));
		return rc;
	}
	if (renameat2(c->parentfd, c->stage_name, c->parentfd, c->dest_name, RENAME_NOREPLACE) < 0) {
		rc = -errno;
		log_err("cannot publish %s: %s", c->o->dest, strerror(errno));
		return rc;
	}
	c->stage_name[0] = 0; /* nothing left to remove */
	return 0;
}

/* Empty the directory at fd (ours), then remove name from parentfd if it is still that
 * directory: in DEST's directory another user may have renamed it and put something of
 * theirs, or something they may not delete, in its place. */
static void cap_remove_own_dir(int parentfd, const char *name, int fd)
{
	struct stat mine, now;
	if (fd < 0 || fstat(fd, &mine) < 0)
		return;
	int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = dfd < 0 ? NULL : fdopendir(dfd);
	if (!d) {
		if (dfd >= 0)
			close(dfd);
		return;
	}
	for (struct dirent *de; (de = readdir(d));)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			cp_rmtree(fd, de->d_name);
	closedir(d);
	if (fstatat(parentfd, name, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_ino == mine.st_ino &&
	    now.st_dev == mine.st_dev)
		unlinkat(parentfd, name, AT_REMOVEDIR);
}

/* Remove the staging and work directories of this capture, if still there (not published). */
void cap_remove_stage(struct cap *c)
{
	if (c->parentfd < 0)
		return;
	if (c->stage_name[0])
		cap_remove_own_dir(c->parentfd, c->stage_name, c->stagefd);
	if (c->work_name[0])
		cap_remove_own_dir(c->parentfd, c->work_name, c->workfd);
}
