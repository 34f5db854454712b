/* SPDX-License-Identifier: GPL-2.0-or-later */
/* stillctl verify: is this directory exactly the snapshot its manifest describes? */
#include "verify.h"
#include "capture.h"
#include "copy.h"
#include "manifest.h"
#include "sha256.h"
#include "sqlcap.h"
#include "util.h"

#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

struct vf {
	FILE *out;
	int problems, notes;
	int dirfd;
	const char *dir;
};

static void vf_report(struct vf *v, int problem, const char *what, const char *path,
		      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void vf_report(struct vf *v, int problem, const char *what, const char *path,
		      const char *fmt, ...)
{
	char *esc = cp_escape(path);
	fprintf(v->out, "%s %s", what, esc ? esc : path);
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		fputs(": ", v->out);
		vfprintf(v->out, fmt, ap);
		va_end(ap);
	}
	fputc('\n', v->out);
	free(esc);
	if (problem)
		v->problems++;
	else
		v->notes++;
}

static int vf_open(int dirfd, const char *path, int flags)
{
	/* The copy being checked may be hostile: no symlink may lead the walk outside it. */
	struct open_how how = { .flags = (uint64_t)(flags | O_CLOEXEC),
				.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
	int fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
	if (fd < 0 && errno == ENOSYS)
		return ut_open_beneath_walk(dirfd, path, flags);
	return fd < 0 ? -errno : fd;
}

static void vf_check_db(struct vf *v, const struct mf_entry *e, int fd)
{
	uint8_t hdr[20];
	char path[PATH_MAX + 64], err[256];
	if (pread(fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr || !sq_is_header(hdr)) {
		vf_report(v, 1, "corrupt", e->path, "not an SQLite database");
		return;
	}
	if (hdr[18] != 1 || hdr[19] != 1)
		vf_report(v, 1, "not-self-contained", e->path, "header says WAL mode (bytes 18-19 = %d,%d)",
			  hdr[18], hdr[19]);
	static const char *sfx[] = { "-wal", "-shm", "-journal" };
	for (unsigned k = 0; k < 3; k++) {
		struct stat st;
		snprintf(path, sizeof path, "%s%s", e->path, sfx[k]);
		if (fstatat(v->dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0)
			vf_report(v, 1, "not-self-contained", e->path, "%s file beside it", sfx[k]);
	}
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	if (sq_integrity(path, err, sizeof err))
		vf_report(v, 1, "corrupt", e->path, "integrity_check: %s", err);
}

static void vf_entry(struct vf *v, const struct mf_entry *e, const struct vf_opts *o)
{
	struct stat st;
	int fd = vf_open(v->dirfd, e->path, O_PATH | O_NOFOLLOW);
	if (fd < 0 || fstat(fd, &st) < 0) {
		if (fd >= 0)
			close(fd);
		if (e->kind == 'd')
			vf_report(v, 0, "note: missing-directory", e->path,
				  "object stores do not keep empty directories");
		else if (e->kind == 'l')
			vf_report(v, 0, "note: missing-symlink", e->path, "some uploaders drop symlinks");
		else
			vf_report(v, 1, "missing", e->path, NULL);
		return;
	}
	switch (e->kind) {
	case 'd':
		if (!S_ISDIR(st.st_mode))
			vf_report(v, 1, "differs", e->path, "expected a directory");
		break;
	case 'l': {
		char target[PATH_MAX + 1];
		uint8_t d[32];
		if (!S_ISLNK(st.st_mode)) {
			vf_report(v, 0, "note: not-a-symlink", e->path, "some uploaders copy link targets");
			break;
		}
		ssize_t n = readlinkat(fd, "", target, PATH_MAX);
		if (n < 0) {
			vf_report(v, 1, "unreadable", e->path, "%s", strerror(errno));
			break;
		}
		sha256(target, (size_t)n, d);
		if (!e->has_digest || memcmp(d, e->digest, 32))
			vf_report(v, 1, "differs", e->path, "symlink target");
		break;
	}
	default: {
		if (!S_ISREG(st.st_mode)) {
			vf_report(v, 1, "differs", e->path, "expected a regular file");
			break;
		}
		int rfd = vf_open(v->dirfd, e->path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
		if (rfd < 0) {
			vf_report(v, 1, "unreadable", e->path, "%s", strerror(-rfd));
			break;
		}
		struct cp_result r;
		int rc = cp_digest_fd(rfd, &r);
		if (rc)
			vf_report(v, 1, "unreadable", e->path, "%s", strerror(-rc));
		else if (r.size != e->size)
			vf_report(v, 1, "differs", e->path, "size %" PRIu64 ", expected %" PRIu64, r.size,
				  e->size);
		else if (!e->has_digest || memcmp(r.digest, e->digest, 32))
			vf_report(v, 1, "differs", e->path, "content (digest mismatch)");
		else if (e->kind == 's' && !o->quick)
			vf_check_db(v, e, rfd);
		close(rfd);
	}
	}
	close(fd);
}

/* Anything in the copy that the manifest does not list. */
static void vf_extras(struct vf *v, const struct mf *m, int dirfd, const char *rel)
{
	int dfd = dup(dirfd);
	DIR *d = dfd < 0 ? NULL : fdopendir(dfd);
	if (!d) {
		if (dfd >= 0)
			close(dfd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		char path[PATH_MAX];
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(path, sizeof path, "%s%s%s", rel, rel[0] ? "/" : "", de->d_name);
		if (!rel[0] && !strcmp(de->d_name, CAP_MANIFEST_NAME))
			continue;
		const struct mf_entry *e = mf_find(m, path);
		if (!e) {
			vf_report(v, 1, "extra", path, "not in the manifest");
			continue;
		}
		if (e->kind == 'd') {
			int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0) {
				vf_extras(v, m, sub, path);
				close(sub);
			}
		}
	}
	closedir(d);
}

int vf_verify(const char *dir, const struct vf_opts *o, FILE *out)
{
	struct vf v = { .out = out, .dir = dir };
	struct mf m;
	v.dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (v.dirfd < 0) {
		int rc = -errno;
		log_err("%s: %s", dir, strerror(errno));
		return rc;
	}
	int rc = mf_load(v.dirfd, CAP_MANIFEST_NAME, &m);
	if (rc) {
		if (rc == -ENOENT)
			log_err("%s: no %s here; not a stillfs snapshot (or its manifest was not copied)",
				dir, CAP_MANIFEST_NAME);
		else
			log_err("%s/%s: %s; nothing can be verified against it", dir,
				CAP_MANIFEST_NAME, m.why);
		close(v.dirfd);
		return rc;
	}
	for (size_t i = 0; i < m.n; i++)
		vf_entry(&v, &m.e[i], o);
	if (!o->ignore_extra)
		vf_extras(&v, &m, v.dirfd, "");
	if (v.problems)
		fprintf(out, "verify: %s: %d problem%s in snapshot %s (%zu entries)\n", dir, v.problems,
			v.problems == 1 ? "" : "s", m.stats.id, m.n);
	else
		fprintf(out, "verify: %s: OK, snapshot %s, %zu entries\n", dir, m.stats.id, m.n);
	mf_free(&m);
	close(v.dirfd);
	return v.problems;
}
