/* Unit tests for the capture engine (cap_snapshot) and verify (vf_verify) on small temporary
 * stores. No concurrent writer here except a live WAL connection, held by a separate
 * sqlite3 process; the torture tests cover writers at full speed. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/capability.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "capture.h"
#include "manifest.h"
#include "sha256.h"
#include "sqlcap.h"
#include "util.h"
#include "verify.h"

extern char **environ;

#define MiB ((uint64_t)1 << 20)

/* ---- fixture ---------------------------------------------------------------------------- */

static char base[64];
static int basefd = -1;
static pid_t child = -1;

static int rm_one(const char *p, const struct stat *s, int flag, struct FTW *f)
{
	(void)s, (void)flag, (void)f;
	return remove(p) < 0 && errno != ENOENT ? -1 : 0;
}

static void raise_caps(void);

static void setup(void)
{
	snprintf(base, sizeof base, "/tmp/stillfs-ut-cap-XXXXXX");
	cr_assert_not_null(mkdtemp(base));
	basefd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(basefd, 0);
	cr_assert_eq(mkdirat(basefd, "store", 0755), 0);
	cr_assert_eq(mkdirat(basefd, "out", 0700), 0);
	log_init("test_capture");
	log_set_quiet(1);
}

static void teardown(void)
{
	raise_caps();
	if (child > 0) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		child = -1;
	}
	if (basefd >= 0)
		close(basefd);
	basefd = -1;
	nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(capture, .init = setup, .fini = teardown, .timeout = 60);

/* ---- helpers ---------------------------------------------------------------------------- */

static const char *P(const char *rel)
{
	static char buf[8][PATH_MAX];
	static unsigned k;
	char *b = buf[k++ % 8];
	snprintf(b, PATH_MAX, "%s/%s", base, rel);
	return b;
}

static uint64_t rng_state = 0x853c49e6748fea9bULL;

static void fill_random(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		rng_state ^= rng_state << 13;
		rng_state ^= rng_state >> 7;
		rng_state ^= rng_state << 17;
		p[i] = (uint8_t)(rng_state >> 32);
	}
}

static void put(const char *rel, const void *data, size_t n, mode_t mode)
{
	int fd = openat(basefd, rel, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0, "create %s: %s", rel, strerror(errno));
	cr_assert_eq(write(fd, data, n), (ssize_t)n);
	cr_assert_eq(fchmod(fd, mode), 0);
	close(fd);
}

static void put_str(const char *rel, const char *s) { put(rel, s, strlen(s), 0644); }

static void put_random(const char *rel, size_t n, mode_t mode)
{
	uint8_t *b = malloc(n ? n : 1);
	cr_assert_not_null(b);
	fill_random(b, n);
	put(rel, b, n, mode);
	free(b);
}

static void mkd(const char *rel, mode_t mode)
{
	cr_assert_eq(mkdirat(basefd, rel, 0755), 0, "mkdir %s: %s", rel, strerror(errno));
	cr_assert_eq(fchmodat(basefd, rel, mode, 0), 0);
}

static struct stat lst(const char *rel)
{
	struct stat st;
	cr_assert_eq(fstatat(basefd, rel, &st, AT_SYMLINK_NOFOLLOW), 0, "stat %s: %s", rel,
		     strerror(errno));
	return st;
}

static int exists(const char *rel)
{
	struct stat st;
	return fstatat(basefd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static int64_t ns(struct timespec t) { return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec; }

/* The mtime a file new or changed in a snapshot must carry, so that no uploader skips it
 * and none sends it twice: the whole second of the cut (S3 keeps LastModified in whole
 * seconds, truncated: an upload after the cut is not older than that second, an upload
 * before the capture began is, because the engine lets the cut fall in a later second),
 * and a later second than the previous snapshot's copy (rsync compares whole seconds). */
static void assert_new_mtime(const char *what, struct timespec mtime, struct timespec cut,
			     const struct timespec *prev)
{
	cr_assert_eq(mtime.tv_nsec, 0, "%s: mtime %lld.%09ld is not a whole second", what,
		     (long long)mtime.tv_sec, mtime.tv_nsec);
	cr_assert_eq(mtime.tv_sec, cut.tv_sec, "%s: mtime %lld is not the cut's second %lld",
		     what, (long long)mtime.tv_sec, (long long)cut.tv_sec);
	if (prev)
		cr_assert_gt(mtime.tv_sec, prev->tv_sec,
			     "%s: mtime not in a later second than the previous copy's", what);
}

/* Content digest by the documented definition (SHA-256 up to 1 MiB, else SHA-256 of the
 * 1 MiB blocks' SHA-256s), computed here with sha256() alone. Blocks that are all hole are
 * not read: their digest is that of zeros, which is what reading them would give. */
static void digest_fd(int fd, uint8_t out[32])
{
	struct stat st;
	cr_assert_eq(fstat(fd, &st), 0);
	uint64_t size = (uint64_t)st.st_size;
	uint8_t *buf = malloc(MiB), *zeros = calloc(1, MiB), zd[32];
	cr_assert(buf && zeros);
	sha256(zeros, MiB, zd);
	if (size <= MiB) {
		cr_assert_eq(pread(fd, buf, size, 0), (ssize_t)size);
		sha256(buf, size, out);
	} else {
		struct sha256 s;
		sha256_init(&s);
		for (uint64_t off = 0; off < size; off += MiB) {
			size_t n = (size_t)(size - off < MiB ? size - off : MiB);
			off_t data = lseek(fd, (off_t)off, SEEK_DATA);
			uint8_t d[32];
			if ((data < 0 || (uint64_t)data >= off + n) && n == MiB) {
				memcpy(d, zd, 32);
			} else {
				cr_assert_eq(pread(fd, buf, n, (off_t)off), (ssize_t)n);
				sha256(buf, n, d);
			}
			sha256_update(&s, d, 32);
		}
		sha256_final(&s, out);
	}
	free(buf);
	free(zeros);
}

static void digest_rel(const char *rel, uint8_t out[32])
{
	int fd = openat(basefd, rel, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	cr_assert_geq(fd, 0, "open %s: %s", rel, strerror(errno));
	digest_fd(fd, out);
	close(fd);
}

/* A recursive listing of a tree: lstat of everything, content digest of regular files,
 * targets of symlinks. Never follows a symlink, never opens a fifo or socket. */
struct node {
	char path[512];
	struct stat st;
	uint8_t digest[32];
	char target[512];
};
struct tree {
	struct node *v;
	size_t n, cap;
};

static void walk(struct tree *t, int dirfd, const char *rel)
{
	int dfd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(dfd, 0);
	DIR *d = fdopendir(dfd);
	cr_assert_not_null(d);
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (t->n == t->cap) {
			t->cap = t->cap ? 2 * t->cap : 64;
			t->v = realloc(t->v, t->cap * sizeof *t->v);
			cr_assert_not_null(t->v);
		}
		struct node *nd = &t->v[t->n++];
		memset(nd, 0, sizeof *nd);
		snprintf(nd->path, sizeof nd->path, "%s%s%s", rel, rel[0] ? "/" : "", de->d_name);
		cr_assert_eq(fstatat(dirfd, de->d_name, &nd->st, AT_SYMLINK_NOFOLLOW), 0);
		if (S_ISREG(nd->st.st_mode)) {
			int fd = openat(dirfd, de->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			cr_assert_geq(fd, 0);
			digest_fd(fd, nd->digest);
			close(fd);
		} else if (S_ISLNK(nd->st.st_mode)) {
			ssize_t n = readlinkat(dirfd, de->d_name, nd->target, sizeof nd->target - 1);
			cr_assert_gt(n, 0);
		} else if (S_ISDIR(nd->st.st_mode)) {
			char sub[512];
			snprintf(sub, sizeof sub, "%s", nd->path);
			int fd = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			cr_assert_geq(fd, 0);
			walk(t, fd, sub); /* may move t->v: nd is not used after this */
			close(fd);
		}
	}
	closedir(d);
}

static struct tree listing(const char *rel)
{
	struct tree t = { 0 };
	int fd = openat(basefd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "open %s: %s", rel, strerror(errno));
	walk(&t, fd, "");
	close(fd);
	return t;
}

static const struct node *find(const struct tree *t, const char *path)
{
	for (size_t i = 0; i < t->n; i++)
		if (!strcmp(t->v[i].path, path))
			return &t->v[i];
	return NULL;
}

/* Names in dir (not recursive), sorted, joined with '|'. */
static void names(const char *rel, char *out, size_t len)
{
	char *v[64];
	size_t n = 0;
	int fd = openat(basefd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	DIR *d = fdopendir(fd);
	cr_assert_not_null(d);
	struct dirent *de;
	while ((de = readdir(d)) && n < 64)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			v[n] = strdup(de->d_name);
			cr_assert_not_null(v[n++]);
		}
	closedir(d);
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && strcmp(v[j - 1], v[j]) > 0; j--) {
			char *x = v[j];
			v[j] = v[j - 1];
			v[j - 1] = x;
		}
	out[0] = 0;
	for (size_t i = 0; i < n; i++) {
		snprintf(out + strlen(out), len - strlen(out), "%s%s", i ? "|" : "", v[i]);
		free(v[i]);
	}
}

static void opts_for(struct cap_opts *o, const char *store, const char *dest)
{
	cap_opts_init(o);
	o->store = store;
	o->dest = dest;
	o->quiet = 1;
}

static int snap_opts(const char *store, const char *dest, const char *prev, double settle,
		     struct cap_stats *st)
{
	struct cap_opts o;
	opts_for(&o, store, dest);
	o.previous = prev;
	if (settle > 0)
		o.settle_timeout = settle;
	return cap_snapshot(&o, st);
}

/* Snapshot base/store into base/out/NAME, with base/out/PREV as --previous. */
static void snap(const char *name, const char *prev, struct cap_stats *st)
{
	char d[128], p[128];
	snprintf(d, sizeof d, "out/%s", name);
	if (prev)
		snprintf(p, sizeof p, "out/%s", prev);
	int rc = snap_opts(P("store"), P(d), prev ? P(p) : NULL, 0, st);
	cr_assert_eq(rc, 0, "cap_snapshot %s: %s (%s)", name, strerror(-rc), log_last_error());
}

static int verify(const char *rel, int ignore_extra, char *report, size_t len)
{
	struct vf_opts o = { .ignore_extra = ignore_extra };
	FILE *f = fmemopen(report, len, "w");
	cr_assert_not_null(f);
	int rc = vf_verify(P(rel), &o, f);
	fclose(f);
	report[len - 1] = 0;
	return rc;
}

/* ---- SQLite helpers --------------------------------------------------------------------- */

static void sql(sqlite3 *db, const char *q)
{
	char *err = NULL;
	int rc = sqlite3_exec(db, q, NULL, NULL, &err);
	cr_assert_eq(rc, SQLITE_OK, "%s: %s", q, err ? err : "?");
}

static void make_db(const char *rel, const char *mode, int rows)
{
	sqlite3 *db;
	cr_assert_eq(sqlite3_open(P(rel), &db), SQLITE_OK);
	char q[256];
	snprintf(q, sizeof q, "PRAGMA journal_mode=%s", mode);
	sql(db, q);
	sql(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
	sql(db, "BEGIN");
	for (int i = 0; i < rows; i++) {
		snprintf(q, sizeof q, "INSERT INTO t(v) VALUES (randomblob(%d))", 100 + i % 700);
		sql(db, q);
	}
	sql(db, "COMMIT");
	cr_assert_eq(sqlite3_close(db), SQLITE_OK);
}

static int64_t query_int(const char *path, const char *q)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK, "%s: %s", q,
		     sqlite3_errmsg(db));
	cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s: %s", q, sqlite3_errmsg(db));
	int64_t v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

/* What the brief asks of every database in a snapshot: rollback header, nothing beside
 * it, intact. Opened through a read-only immutable URI so that nothing is written here. */
static void assert_self_contained_db(const char *rel)
{
	uint8_t hdr[100];
	int fd = openat(basefd, rel, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "%s: %s", rel, strerror(errno));
	cr_assert_eq(pread(fd, hdr, sizeof hdr, 0), (ssize_t)sizeof hdr);
	close(fd);
	cr_assert_eq(memcmp(hdr, "SQLite format 3", 16), 0, "%s is not a database", rel);
	cr_assert_eq(hdr[18], 1, "%s: header byte 18 is %d", rel, hdr[18]);
	cr_assert_eq(hdr[19], 1, "%s: header byte 19 is %d", rel, hdr[19]);
	static const char *sfx[] = { "-wal", "-shm", "-journal" };
	for (unsigned k = 0; k < 3; k++) {
		char c[512];
		snprintf(c, sizeof c, "%s%s", rel, sfx[k]);
		cr_assert(!exists(c), "%s beside the snapshot's database", c);
	}
	char uri[PATH_MAX + 64];
	snprintf(uri, sizeof uri, "file:%s?mode=ro&immutable=1", P(rel));
	sqlite3 *db;
	sqlite3_stmt *st;
	cr_assert_eq(sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL),
		     SQLITE_OK);
	cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
	cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok", "%s", rel);
	sqlite3_finalize(st);
	sqlite3_close(db);
}

/* ---- the quiet store -------------------------------------------------------------------- */

/* Everything a store may hold, with modes and owners worth keeping. */
static void build_quiet_store(void)
{
	put_str("store/top.txt", "hello\n");
	put("store/empty", "", 0, 0600);
	put_random("store/exec.sh", 3000, 0755);
	cr_assert_eq(fchownat(basefd, "store/exec.sh", 4242, 4343, 0), 0);
	cr_assert_eq(fchmodat(basefd, "store/exec.sh", 04755, 0), 0); /* chown cleared it */
	put_random("store/secret", 100, 0000);
	mkd("store/dir", 0750);
	mkd("store/dir/sub", 02775);
	cr_assert_eq(fchownat(basefd, "store/dir/sub", 4242, 4343, 0), 0);
	cr_assert_eq(fchmodat(basefd, "store/dir/sub", 02775, 0), 0);
	put_random("store/dir/sub/deep.bin", 3 * MiB + 17, 0640);
	mkd("store/dir/emptydir", 0700);
	mkd("store/sticky", 01777);
	put_str("store/name with spaces\nand a newline%", "odd name\n");
	put_str("store/caf\xc3\xa9-\x80\xff", "high bytes\n");
	put_str("store/notes.txt", "notes\n");
	put_str("store/notes.txt-journal", "not a journal: notes.txt is no database\n");
	put_str("store/orphan-wal", "no database called orphan here\n");

	/* A large sparse file: 1 GiB with three small data regions. */
	int fd = openat(basefd, "store/sparse.img", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, 1 << 30), 0);
	uint8_t chunk[4096];
	for (int i = 0; i < 3; i++) {
		fill_random(chunk, sizeof chunk);
		cr_assert_eq(pwrite(fd, chunk, sizeof chunk, (off_t)i * 400 * (off_t)MiB + 4096),
			     (ssize_t)sizeof chunk);
	}
	close(fd);

	/* Symlinks: relative, to a directory, leading out of the store (absolute and relative),
	 * dangling; one with its own owner. */
	mkd("outside", 0755);
	put_str("outside/must-not-be-copied", "outside the store\n");
	cr_assert_eq(symlinkat("top.txt", basefd, "store/link-rel"), 0);
	cr_assert_eq(symlinkat("dir", basefd, "store/link-dir"), 0);
	cr_assert_eq(symlinkat(P("outside"), basefd, "store/link-abs-out"), 0);
	cr_assert_eq(symlinkat("../../outside/must-not-be-copied", basefd, "store/dir/link-rel-out"),
		     0);
	cr_assert_eq(symlinkat("nowhere/at/all", basefd, "store/link-dangling"), 0);
	cr_assert_eq(fchownat(basefd, "store/link-rel", 4242, 4343, AT_SYMLINK_NOFOLLOW), 0);

	/* Things that are not files: skipped. */
	cr_assert_eq(mkfifoat(basefd, "store/fifo", 0644), 0);
	cr_assert_eq(mkfifoat(basefd, "store/dir/fifo2", 0600), 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", P("store/sock"));
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(s, 0);
	cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof sa), 0, "bind: %s", strerror(errno));
	close(s);

	/* Databases, recognised by content: rollback mode under an unusual name, and a
	 * WAL-mode database whose writer has closed it (no -wal left). */
	make_db("store/dir/app.data", "DELETE", 300);
	make_db("store/wal.sqlite3", "WAL", 200);
	cr_assert(!exists("store/wal.sqlite3-wal"));
	/* Journal modes that leave a (cold) -journal behind for good: not for the snapshot. */
	make_db("store/persist.db", "PERSIST", 120);
	make_db("store/trunc.db", "TRUNCATE", 80);
	cr_assert(exists("store/persist.db-journal") && exists("store/trunc.db-journal"));

	/* A read-only directory, filled first. */
	mkd("store/ro", 0755);
	put_str("store/ro/f", "in a read-only directory\n");
	cr_assert_eq(fchmodat(basefd, "store/ro/f", 0444, 0), 0);
	cr_assert_eq(fchmodat(basefd, "store/ro", 0555, 0), 0);
}

/* Not in the snapshot: fifos, sockets, and the journals of databases. */
static int is_skipped(const char *path)
{
	return !strcmp(path, "fifo") || !strcmp(path, "dir/fifo2") || !strcmp(path, "sock") ||
	       !strcmp(path, "persist.db-journal") || !strcmp(path, "trunc.db-journal");
}
#define NSKIPPED 5

Test(capture, quiet_store_copied_exactly_and_left_untouched)
{
	build_quiet_store();
	struct tree before = listing("store");
	struct cap_stats st;
	snap("snap", NULL, &st);
	struct tree after = listing("store");
	struct tree sn = listing("out/snap");

	/* The store: nothing added, removed or touched (atime aside). */
	cr_assert_eq(after.n, before.n, "the store gained or lost entries");
	for (size_t i = 0; i < before.n; i++) {
		const struct node *b = &before.v[i], *a = find(&after, b->path);
		cr_assert_not_null(a, "%s vanished from the store", b->path);
		cr_assert_eq(a->st.st_ino, b->st.st_ino, "%s", b->path);
		cr_assert_eq(a->st.st_mode, b->st.st_mode, "%s", b->path);
		cr_assert_eq(a->st.st_uid, b->st.st_uid, "%s", b->path);
		cr_assert_eq(a->st.st_gid, b->st.st_gid, "%s", b->path);
		cr_assert_eq(a->st.st_size, b->st.st_size, "%s", b->path);
		cr_assert_eq(a->st.st_nlink, b->st.st_nlink, "%s", b->path);
		cr_assert_eq(ns(a->st.st_mtim), ns(b->st.st_mtim), "%s: mtime changed", b->path);
		cr_assert_eq(ns(a->st.st_ctim), ns(b->st.st_ctim), "%s: ctime changed", b->path);
		cr_assert_arr_eq(a->digest, b->digest, 32, "%s: content changed", b->path);
		cr_assert_str_eq(a->target, b->target, "%s", b->path);
	}

	/* The snapshot: everything but fifos and sockets, plus the manifest. */
	size_t nfiles = 0;
	for (size_t i = 0; i < before.n; i++) {
		const struct node *b = &before.v[i], *s = find(&sn, b->path);
		if (is_skipped(b->path)) {
			cr_assert_null(s, "%s should have been skipped", b->path);
			continue;
		}
		cr_assert_not_null(s, "%s missing from the snapshot", b->path);
		cr_assert_eq(s->st.st_mode, b->st.st_mode, "%s: mode %o, store %o", b->path,
			     s->st.st_mode, b->st.st_mode);
		cr_assert_eq(s->st.st_uid, b->st.st_uid, "%s: owner", b->path);
		cr_assert_eq(s->st.st_gid, b->st.st_gid, "%s: group", b->path);
		if (S_ISLNK(b->st.st_mode)) {
			cr_assert_str_eq(s->target, b->target, "%s: link target", b->path);
			cr_assert_eq(ns(s->st.st_mtim), ns(b->st.st_mtim), "%s: link mtime", b->path);
		} else if (S_ISDIR(b->st.st_mode)) {
			cr_assert_eq(ns(s->st.st_mtim), ns(b->st.st_mtim), "%s: directory mtime",
				     b->path);
		} else if (S_ISREG(b->st.st_mode)) {
			nfiles++;
			cr_assert_eq(s->st.st_nlink, 1, "%s: linked without --previous", b->path);
			/* New in this snapshot: dated so that uploaders send it. */
			assert_new_mtime(b->path, s->st.st_mtim, st.cut, NULL);
			if (strcmp(b->path, "wal.sqlite3")) {
				cr_assert_eq(s->st.st_size, b->st.st_size, "%s: size", b->path);
				cr_assert_arr_eq(s->digest, b->digest, 32, "%s: content differs",
						 b->path);
			}
		}
	}
	cr_assert_eq(sn.n, before.n - NSKIPPED + 1, "the snapshot holds %zu entries", sn.n);
	struct stat sroot = lst("store"), droot = lst("out/snap");
	cr_assert_eq(droot.st_mode, sroot.st_mode, "root mode %o, store %o", droot.st_mode,
		     sroot.st_mode);
	cr_assert_eq(droot.st_uid, sroot.st_uid);
	cr_assert_eq(droot.st_gid, sroot.st_gid);
	const struct node *m = find(&sn, CAP_MANIFEST_NAME);
	cr_assert_not_null(m, "no manifest");
	cr_assert_eq(st.files, nfiles);

	/* Sparse stays sparse; nothing from outside came in. */
	const struct node *sp = find(&sn, "sparse.img");
	cr_assert_not_null(sp);
	cr_assert_leq((uint64_t)sp->st.st_blocks * 512, 8 * MiB, "sparse.img takes %lld bytes",
		      (long long)sp->st.st_blocks * 512);
	for (size_t i = 0; i < sn.n; i++)
		cr_assert_null(strstr(sn.v[i].path, "must-not-be-copied"), "%s", sn.v[i].path);

	/* Databases: the rollback one is byte-identical (compared above); both are
	 * self-contained and hold every row. */
	assert_self_contained_db("out/snap/dir/app.data");
	assert_self_contained_db("out/snap/wal.sqlite3");
	assert_self_contained_db("out/snap/persist.db");
	assert_self_contained_db("out/snap/trunc.db");
	cr_assert_eq(query_int(P("out/snap/persist.db"), "SELECT count(*) FROM t"), 120);
	cr_assert_eq(query_int(P("out/snap/wal.sqlite3"), "SELECT count(*) FROM t"), 200);
	cr_assert_eq(query_int(P("out/snap/wal.sqlite3"), "SELECT sum(length(v)) FROM t"),
		     query_int(P("store/wal.sqlite3"), "SELECT sum(length(v)) FROM t"));
	cr_assert_eq(query_int(P("out/snap/dir/app.data"), "SELECT count(*) FROM t"), 300);

	/* The manifest agrees, and nothing but DEST is left beside it. */
	struct mf mf;
	cr_assert_eq(mf_load(AT_FDCWD, P("out/snap/" CAP_MANIFEST_NAME), &mf), 0);
	cr_assert_str_eq(mf.stats.id, st.id);
	cr_assert_eq(ns(mf.stats.cut), ns(st.cut));
	struct cap_stats rd;
	cr_assert_eq(cap_read_stats(P("out/snap"), &rd), 0);
	cr_assert_str_eq(rd.id, st.id);
	cr_assert_eq(rd.files, st.files);
	cr_assert_eq(rd.bytes_copied, st.bytes_copied);
	cr_assert_eq(mf.n, sn.n - 1);
	cr_assert_eq(mf_find(&mf, "dir/app.data")->kind, 's');
	cr_assert_eq(mf_find(&mf, "wal.sqlite3")->kind, 's');
	cr_assert_eq(mf_find(&mf, "notes.txt-journal")->kind, 'f');
	cr_assert_eq(mf_find(&mf, "link-abs-out")->kind, 'l');
	cr_assert_eq(mf_find(&mf, "dir/sub")->kind, 'd');
	cr_assert_null(mf_find(&mf, "fifo"));
	/* The manifest records the mtimes the snapshot's files really have. */
	for (size_t i = 0; i < mf.n; i++) {
		const struct node *s = find(&sn, mf.e[i].path);
		cr_assert_not_null(s, "manifest lists %s, which is not there", mf.e[i].path);
		if (mf.e[i].kind == 'f' || mf.e[i].kind == 's')
			cr_assert_eq(mf.e[i].mtime_ns, ns(s->st.st_mtim), "%s", mf.e[i].path);
	}
	mf_free(&mf);
	char ls[1024];
	names("out", ls, sizeof ls);
	cr_assert_str_eq(ls, "snap", "left beside DEST: %s", ls);
	char report[4096];
	int problems = verify("out/snap", 0, report, sizeof report);
	cr_assert_eq(problems, 0, "verify of a fresh snapshot: %s", report);
	free(before.v);
	free(after.v);
	free(sn.v);
}

/* ---- DEST ------------------------------------------------------------------------------- */

Test(capture, dest_that_exists_is_refused_untouched)
{
	put_str("store/a", "a\n");
	mkd("out/snap", 0755);
	put_str("out/snap/mine", "someone's data\n");
	put_str("out/file", "x\n");
	cr_assert_eq(symlinkat("nowhere", basefd, "out/dangling"), 0);
	struct cap_stats st;
	cr_assert_eq(snap_opts(P("store"), P("out/snap"), NULL, 0, &st), -EEXIST);
	cr_assert_eq(snap_opts(P("store"), P("out/file"), NULL, 0, &st), -EEXIST);
	cr_assert_eq(snap_opts(P("store"), P("out/dangling"), NULL, 0, &st), -EEXIST);
	char ls[1024];
	names("out", ls, sizeof ls);
	cr_assert_str_eq(ls, "dangling|file|snap", "now in out/: %s", ls);
	names("out/snap", ls, sizeof ls);
	cr_assert_str_eq(ls, "mine");
}

Test(capture, dest_inside_store_is_refused)
{
	put_str("store/a", "a\n");
	mkd("store/dir", 0755);
	mkd("store/dir/deeper", 0755);
	cr_assert_eq(symlinkat("store/dir", basefd, "alias"), 0);
	char before[1024], ls[1024];
	names("store", before, sizeof before);
	static const char *dests[] = { "store/snap", "store/dir/snap", "store/dir/deeper/snap",
				       "alias/snap", "store/./dir/../snap" };
	for (unsigned i = 0; i < sizeof dests / sizeof dests[0]; i++) {
		struct cap_stats st;
		int rc = snap_opts(P("store"), P(dests[i]), NULL, 0, &st);
		cr_assert_eq(rc, -EINVAL, "DEST %s inside the store: %d", dests[i], rc);
		names("store", ls, sizeof ls);
		cr_assert_str_eq(ls, before, "%s: the store now holds %s", dests[i], ls);
		names("store/dir", ls, sizeof ls);
		cr_assert_str_eq(ls, "deeper", "%s: store/dir now holds %s", dests[i], ls);
		names("store/dir/deeper", ls, sizeof ls);
		cr_assert_str_eq(ls, "", "%s: store/dir/deeper now holds %s", dests[i], ls);
	}
}

/* A capture that fails after it has started staging leaves nothing behind. A settle timeout
 * far below the time of one copy pass is a deterministic way to fail late. */
Test(capture, failure_leaves_nothing_beside_dest)
{
	put_random("store/a", 100000, 0644);
	mkd("store/ro", 0755);
	put_str("store/ro/f", "x\n");
	cr_assert_eq(fchmodat(basefd, "store/ro", 0555, 0), 0);
	make_db("store/db", "DELETE", 10);
	struct cap_stats st;
	int rc = snap_opts(P("store"), P("out/snap"), NULL, 1e-9, &st);
	cr_assert_eq(rc, -EAGAIN, "rc %d", rc);
	char ls[1024];
	names("out", ls, sizeof ls);
	cr_assert_str_eq(ls, "", "left in out/: %s", ls);

	/* And a store that is not there at all. */
	rc = snap_opts(P("no-such-store"), P("out/snap"), NULL, 0, &st);
	cr_assert_lt(rc, 0);
	names("out", ls, sizeof ls);
	cr_assert_str_eq(ls, "", "left in out/: %s", ls);
}

/* "DEST/" names the same directory as "DEST"; the trailing slash must not matter. */
Test(capture, dest_with_trailing_slash)
{
	put_str("store/a", "a\n");
	char dest[PATH_MAX];
	snprintf(dest, sizeof dest, "%s/", P("out/snap"));
	struct cap_stats st;
	int rc = snap_opts(P("store"), dest, NULL, 0, &st);
	char ls[1024];
	names("out", ls, sizeof ls);
	cr_expect_str_eq(ls, rc == 0 ? "snap" : "", "left in out/: %s", ls);
	cr_assert_eq(rc, 0, "cap_snapshot(\"%s\"): %s (%s)", dest, strerror(-rc), log_last_error());
	cr_assert(exists("out/snap/a"));
}

/* A store restored from a snapshot (the brief's download-then-run case) carries an old
 * manifest at its root. Snapshotting it must work, and DEST's manifest must be the new one. */
Test(capture, store_restored_from_a_snapshot)
{
	put_str("store/a", "a\n");
	mkd("store/seg", 0755);
	put_str("store/seg/b", "b\n");
	struct cap_stats st1, st2;
	snap("first", NULL, &st1);
	/* "Restore" it: the first snapshot becomes the store. */
	cr_assert_eq(renameat(basefd, "store", basefd, "old-store"), 0);
	cr_assert_eq(renameat(basefd, "out/first", basefd, "store"), 0);
	put_str("store/c", "written by the application after the restore\n");
	int rc = snap_opts(P("store"), P("out/second"), NULL, 0, &st2);
	char ls[1024];
	names("out", ls, sizeof ls);
	cr_expect_str_eq(ls, rc == 0 ? "second" : "", "left in out/: %s", ls);
	cr_assert_eq(rc, 0, "cap_snapshot: %s (%s)", strerror(-rc), log_last_error());
	struct cap_stats rd;
	cr_assert_eq(cap_read_stats(P("out/second"), &rd), 0);
	cr_assert_str_eq(rd.id, st2.id, "DEST carries the store's old manifest");
	char report[4096];
	cr_assert_eq(verify("out/second", 0, report, sizeof report), 0, "%s", report);
	cr_assert(exists("out/second/c"));
}

Test(capture, empty_store)
{
	struct cap_stats st;
	snap("snap", NULL, &st);
	cr_assert_eq(st.files, 0);
	char ls[1024];
	names("out/snap", ls, sizeof ls);
	cr_assert_str_eq(ls, CAP_MANIFEST_NAME);
	char report[1024];
	cr_assert_eq(verify("out/snap", 0, report, sizeof report), 0, "%s", report);
}

/* More entries than the engine's first table allocation (1024), in nested directories. */
Test(capture, many_files)
{
	char rel[128];
	for (int d = 0; d < 11; d++) {
		snprintf(rel, sizeof rel, "store/d%02d", d);
		mkd(rel, 0755);
		for (int f = 0; f < 100; f++) {
			snprintf(rel, sizeof rel, "store/d%02d/f%03d", d, f);
			char body[64];
			snprintf(body, sizeof body, "%d/%d\n", d, f);
			put_str(rel, body);
		}
	}
	struct cap_opts o;
	struct cap_stats st;
	opts_for(&o, P("store"), P("out/snap"));
	int rc = cap_snapshot(&o, &st);
	cr_assert_eq(rc, 0, "%s", strerror(-rc));
	cr_assert_eq(st.files, 1100);
	struct mf mf;
	cr_assert_eq(mf_load(AT_FDCWD, P("out/snap/" CAP_MANIFEST_NAME), &mf), 0);
	cr_assert_eq(mf.n, 1111);
	mf_free(&mf);
	uint8_t d[32], want[32];
	digest_rel("out/snap/d10/f099", d);
	sha256("10/99\n", 6, want);
	cr_assert_arr_eq(d, want, 32);
	static char report[1 << 16];
	cr_assert_eq(verify("out/snap", 0, report, sizeof report), 0, "%s", report);
}

/* The progress callback: every phase reported once, in order, the last report made at the
 * start of publishing with every file done. */
struct seen_progress {
	char phases[128];
	struct cap_progress last;
	unsigned calls;
};

static void on_progress(const struct cap_progress *p, void *arg)
{
	struct seen_progress *s = arg;
	size_t len = strlen(s->phases);
	const char *prev = len ? strrchr(s->phases, ' ') + 1 : "";
	if (strcmp(prev, p->phase))
		snprintf(s->phases + len, sizeof s->phases - len, " %s", p->phase);
	cr_assert_leq(p->files_done, p->files_total);
	s->last = *p;
	s->calls++;
}

Test(capture, progress_reports_each_phase)
{
	put_str("store/a", "alpha\n");
	put_random("store/b", 100000, 0644);
	mkd("store/d", 0755);
	put_str("store/d/c", "gamma\n");
	struct seen_progress seen = { .phases = "" };
	struct cap_opts o;
	struct cap_stats st;
	opts_for(&o, P("store"), P("out/snap"));
	o.progress = on_progress;
	o.progress_arg = &seen;
	int rc = cap_snapshot(&o, &st);
	cr_assert_eq(rc, 0, "%s", strerror(-rc));
	cr_assert_str_eq(seen.phases, " scan copy cut publish");
	cr_assert_str_eq(seen.last.phase, "publish");
	cr_assert_eq(seen.last.files_total, 3);
	cr_assert_eq(seen.last.files_done, 3);
	cr_assert_eq(seen.last.bytes_total, 100000 + 12);
	cr_assert_geq(seen.last.bytes_done, 100000 + 12);
	cr_assert_eq(seen.last.retries, st.retries);
}

/* ---- capabilities, to run the engine as an unprivileged owner ------------------------------ */

static void raise_caps(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d) == 0) {
		d[0].effective = d[0].permitted;
		d[1].effective = d[1].permitted;
		syscall(SYS_capset, &h, d);
	}
}

/* Root without the capabilities that bypass permission bits is, for files it owns, what an
 * ordinary user running stillctl on their own store is. capset acts on this thread, and
 * Criterion runs each test in its own process. */
static void drop_dac_override(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct d[2];
	cr_assert_eq(syscall(SYS_capget, &h, d), 0);
	unsigned drop[] = { CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER };
	for (unsigned i = 0; i < 3; i++)
		d[drop[i] / 32].effective &= ~(1u << (drop[i] % 32));
	cr_assert_eq(syscall(SYS_capset, &h, d), 0, "capset: %s", strerror(errno));
	cr_assert_eq(mkdirat(basefd, "probe", 0), 0);
	int fd = openat(basefd, "probe", O_RDONLY | O_DIRECTORY);
	if (fd >= 0)
		close(fd);
	cr_assert_lt(fd, 0, "still privileged after capset");
	cr_assert_eq(unlinkat(basefd, "probe", AT_REMOVEDIR), 0);
}

/* A store whose directories (its root included) are read-only to their owner is readable,
 * so an unprivileged owner can snapshot it: the snapshot must be published with the same
 * modes, and a failure must leave nothing behind. */
Test(capture, unprivileged_store_with_readonly_dirs)
{
	if (geteuid() != 0) {
		teardown(); /* Criterion does not run .fini for a skipped test */
		cr_skip_test("needs root to drop exactly the DAC capabilities");
	}
	put_str("store/a", "a\n");
	mkd("store/sub", 0755);
	put_str("store/sub/b", "b\n");
	cr_assert_eq(fchmodat(basefd, "store/sub", 0555, 0), 0);
	cr_assert_eq(fchmodat(basefd, "store", 0555, 0), 0);
	drop_dac_override();
	struct cap_stats st;
	int rc = snap_opts(P("store"), P("out/snap"), NULL, 0, &st);
	char ls[1024];
	names("out", ls, sizeof ls);
	cr_expect_str_eq(ls, rc == 0 ? "snap" : "", "left in out/: %s", ls);
	cr_assert_eq(rc, 0, "cap_snapshot: %s (%s)", strerror(-rc), log_last_error());
	cr_assert_eq(lst("out/snap").st_mode & 07777, 0555);
	cr_assert_eq(lst("out/snap/sub").st_mode & 07777, 0555);
	char report[4096];
	cr_assert_eq(verify("out/snap", 0, report, sizeof report), 0, "%s", report);
}

/* Zero pages of a copy are punched out as it is hashed, which may be well after it was made;
 * without CAP_FSETID a punch clears the set-user-ID bit, so the mode must be set after the
 * last punch, not when the copy is made. */
Test(capture, setuid_file_with_zero_pages_keeps_its_mode)
{
	if (geteuid() != 0) {
		teardown(); /* Criterion does not run .fini for a skipped test */
		cr_skip_test("needs root to drop CAP_FSETID alone");
	}
	const size_t size = 6 * MiB;
	uint8_t *b = calloc(1, size);
	cr_assert_not_null(b);
	fill_random(b, MiB);
	fill_random(b + 4 * MiB + 8192, 4096); /* blocks 1-3, and most of block 4, are zeros */
	put("store/tool", b, size, 04755);
	free(b);
	cr_assert_eq(lst("store/tool").st_mode & 07777, 04755);
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct d[2];
	cr_assert_eq(syscall(SYS_capget, &h, d), 0);
	d[CAP_FSETID / 32].effective &= ~(1u << (CAP_FSETID % 32));
	cr_assert_eq(syscall(SYS_capset, &h, d), 0, "capset: %s", strerror(errno));
	struct cap_stats st;
	snap("snap", NULL, &st);
	raise_caps();
	struct stat c = lst("out/snap/tool");
	cr_assert_eq(c.st_mode & 07777, 04755, "mode %o", c.st_mode & 07777);
	cr_assert_lt((uint64_t)c.st_blocks * 512, 2 * MiB, "the zero pages were not punched");
	char report[4096];
	cr_assert_eq(verify("out/snap", 0, report, sizeof report), 0, "%s", report);
}

/* ---- a WAL database with a live writer ------------------------------------------------------ */

/* The writer is a separate sqlite3 process, not a connection in this one. That is what the
 * engine meets in production, and it keeps POSIX lock semantics honest: locks belong to the
 * process, so an in-process writer would share its locks (and SQLite's in-process lock
 * bookkeeping) with the engine's own connection, and any close() the engine makes on the
 * database file would silently drop the writer's locks instead of being a separate party's
 * problem. posix_spawn execs at once, so this is not a fork inside a Criterion test. */
static int to_child = -1, from_child = -1;

static void spawn_sqlite3(const char *dbpath)
{
	int in[2], out[2];
	cr_assert_eq(pipe2(in, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in[0], 0);
	posix_spawn_file_actions_adddup2(&fa, out[1], 1);
	posix_spawn_file_actions_adddup2(&fa, out[1], 2);
	char *argv[] = { "sqlite3", "-batch", (char *)dbpath, NULL };
	int rc = posix_spawnp(&child, "sqlite3", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(in[0]);
	close(out[1]);
	if (rc) {
		child = -1;
		close(in[1]);
		close(out[0]);
		teardown(); /* Criterion does not run .fini for a skipped test */
		cr_skip_test("cannot run the sqlite3 shell: %s", strerror(rc));
	}
	to_child = in[1];
	from_child = out[0];
	signal(SIGPIPE, SIG_IGN);
}

/* Send SQL, then wait until the shell has run it (it prints a mark after it). */
static void child_run(const char *sqltext)
{
	static unsigned seq;
	char mark[32], buf[4096];
	snprintf(mark, sizeof mark, "MARK-%u", ++seq);
	dprintf(to_child, "%s\n.print %s\n", sqltext, mark);
	size_t got = 0;
	double deadline = ut_now() + 20;
	for (;;) {
		struct pollfd p = { .fd = from_child, .events = POLLIN };
		cr_assert_lt(ut_now(), deadline, "sqlite3 shell did not answer; said: %.*s", (int)got,
			     buf);
		if (poll(&p, 1, 100) <= 0)
			continue;
		ssize_t n = read(from_child, buf + got, sizeof buf - 1 - got);
		cr_assert_gt(n, 0, "sqlite3 shell went away; said: %.*s", (int)got, buf);
		got += (size_t)n;
		buf[got] = 0;
		cr_assert_null(strcasestr(buf, "error"), "sqlite3 shell: %s", buf);
		if (strstr(buf, mark))
			return;
		if (got > sizeof buf / 2) { /* keep the tail, the mark may straddle */
			memmove(buf, buf + got - 64, 64);
			got = 64;
		}
	}
}

static void child_quit(void)
{
	close(to_child);
	int status;
	cr_assert_eq(waitpid(child, &status, 0), child);
	child = -1;
	close(from_child);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "sqlite3 shell exit %d", status);
}

Test(capture, wal_database_with_live_wal_and_open_transaction)
{
	put_str("store/other.txt", "beside the database\n");
	spawn_sqlite3(P("store/live.db"));
	child_run("PRAGMA journal_mode=WAL;\nPRAGMA wal_autocheckpoint=0;\n"
		  "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);");
	/* 50 commits, so the -wal holds many transactions and nothing was checkpointed. */
	for (int i = 0; i < 50; i++) {
		char q[256];
		snprintf(q, sizeof q,
			 "BEGIN; INSERT INTO t(v) SELECT randomblob(300) FROM "
			 "(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<%d) "
			 "SELECT x FROM c); COMMIT;", 10 + i);
		child_run(q);
	}
	const int64_t committed = 50 * 10 + 49 * 50 / 2;
	/* And one transaction still open: the snapshot must not see it. */
	child_run("BEGIN; INSERT INTO t(v) VALUES (zeroblob(5)); INSERT INTO t(v) VALUES (1);");

	struct stat wal = lst("store/live.db-wal"), db = lst("store/live.db");
	cr_assert_gt(wal.st_size, 50 * 4096, "the -wal holds only %lld bytes", (long long)wal.st_size);
	cr_assert_leq(db.st_size, 8192, "the database file was checkpointed (%lld bytes)",
		      (long long)db.st_size);

	struct cap_stats st;
	snap("snap", NULL, &st);
	assert_self_contained_db("out/snap/live.db");
	cr_assert_eq(query_int(P("out/snap/live.db"), "SELECT count(*) FROM t"), committed);
	cr_assert_eq(query_int(P("out/snap/live.db"), "SELECT sum(length(v)) FROM t"),
		     committed * 300);
	cr_assert_eq(query_int(P("out/snap/live.db"), "SELECT max(id) FROM t"), committed);
	cr_assert(exists("out/snap/other.txt"));

	/* The engine read; it did not checkpoint or otherwise write the live files. */
	struct stat wal2 = lst("store/live.db-wal"), db2 = lst("store/live.db");
	cr_assert_eq(wal2.st_size, wal.st_size);
	cr_assert_eq(ns(wal2.st_mtim), ns(wal.st_mtim));
	cr_assert_eq(db2.st_size, db.st_size);
	cr_assert_eq(ns(db2.st_mtim), ns(db.st_mtim));
	char report[4096];
	cr_assert_eq(verify("out/snap", 0, report, sizeof report), 0, "%s", report);

	/* The writer was not disturbed: it commits, and its data is all there. */
	child_run("COMMIT;");
	child_quit();
	cr_assert_eq(query_int(P("store/live.db"), "SELECT count(*) FROM t"), committed + 2);
}

/* Copy the files named (NULL-terminated) from directory `from` to `to`, whole. */
static void copy_files(const char *from, const char *to, ...)
{
	va_list ap;
	va_start(ap, to);
	for (const char *name; (name = va_arg(ap, const char *));) {
		char src[128], dst[128];
		snprintf(src, sizeof src, "%s/%s", from, name);
		snprintf(dst, sizeof dst, "%s/%s", to, name);
		int in = openat(basefd, src, O_RDONLY | O_CLOEXEC);
		cr_assert_geq(in, 0, "open %s: %s", src, strerror(errno));
		struct stat st;
		cr_assert_eq(fstat(in, &st), 0);
		uint8_t *buf = malloc((size_t)st.st_size + 1);
		cr_assert_not_null(buf);
		cr_assert_eq(pread(in, buf, (size_t)st.st_size, 0), st.st_size);
		put(dst, buf, (size_t)st.st_size, 0644);
		free(buf);
		close(in);
	}
	va_end(ap);
}

/* A WAL database that nobody has open, with committed transactions still in its -wal and no
 * -shm: what a copy of a live store made with cp/rsync/s3 sync (which often leave the -shm
 * out) or a restored backup looks like. The snapshot must hold the rows that are only in the
 * -wal, and the store must not gain a -shm: the live store is never written. */
Test(capture, wal_database_without_shm_and_no_writer)
{
	mkd("src", 0755);
	sqlite3 *db;
	cr_assert_eq(sqlite3_open(P("src/t.db"), &db), SQLITE_OK);
	sql(db, "PRAGMA journal_mode=WAL");
	sql(db, "PRAGMA wal_autocheckpoint=0");
	sql(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
	for (int i = 0; i < 20; i++)
		sql(db, "INSERT INTO t(v) VALUES (randomblob(1000))");
	/* Copy the two files while the connection keeps the -wal from being checkpointed. (Our
	 * closing these descriptors drops this process's locks on src/: nobody else uses it.) */
	copy_files("src", "store", "t.db", "t.db-wal", NULL);
	sqlite3_close(db);
	cr_assert_gt(lst("store/t.db-wal").st_size, 20 * 1000);
	cr_assert(!exists("store/t.db-shm"));
	struct tree before = listing("store");

	struct cap_stats st;
	snap("snap", NULL, &st);
	assert_self_contained_db("out/snap/t.db");
	cr_assert_eq(query_int(P("out/snap/t.db"), "SELECT count(*) FROM t"), 20,
		     "rows that were only in the -wal are missing");

	struct tree after = listing("store");
	cr_expect(!exists("store/t.db-shm"), "the capture created t.db-shm in the live store");
	cr_assert_eq(after.n, before.n, "the store has %zu entries, had %zu", after.n, before.n);
	for (size_t i = 0; i < before.n; i++) {
		const struct node *b = &before.v[i], *a = find(&after, b->path);
		cr_assert_not_null(a);
		cr_assert_arr_eq(a->digest, b->digest, 32, "%s changed", b->path);
		cr_assert_eq(ns(a->st.st_mtim), ns(b->st.st_mtim), "%s changed", b->path);
	}
	free(before.v);
	free(after.v);
}

/* ---- the engine's own SQLite connection on the live store --------------------------------- */

/* The store's files, contents and times (ctime too: a chown to the same owner changes it). */
static void assert_same_store(const struct tree *before)
{
	struct tree after = listing("store");
	cr_assert_eq(after.n, before->n, "the store has %zu entries, had %zu", after.n, before->n);
	for (size_t i = 0; i < before->n; i++) {
		const struct node *b = &before->v[i], *a = find(&after, b->path);
		cr_assert_not_null(a, "%s is gone", b->path);
		cr_assert_arr_eq(a->digest, b->digest, 32, "%s changed", b->path);
		cr_assert_eq(ns(a->st.st_mtim), ns(b->st.st_mtim), "%s: mtime changed", b->path);
		cr_assert_eq(ns(a->st.st_ctim), ns(b->st.st_ctim), "%s: ctime changed", b->path);
	}
	free(after.v);
}

static int64_t conn_int(sqlite3 *db, const char *q)
{
	sqlite3_stmt *st;
	cr_assert_eq(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
	cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s: %s", q, sqlite3_errmsg(db));
	int64_t v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* -wal and -shm left by a connection that is gone (nobody holds the -shm): the read-only
 * connection cannot trust or rebuild the -shm, and reads the -wal into its own memory. */
Test(capture, sq_reads_an_unheld_wal_without_writing_it)
{
	mkd("src", 0755);
	sqlite3 *db;
	cr_assert_eq(sqlite3_open(P("src/t.db"), &db), SQLITE_OK);
	sql(db, "PRAGMA journal_mode=WAL");
	sql(db, "PRAGMA wal_autocheckpoint=0");
	sql(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
	for (int i = 0; i < 20; i++)
		sql(db, "INSERT INTO t(v) VALUES (randomblob(1000))");
	copy_files("src", "store", "t.db", "t.db-wal", "t.db-shm", NULL);
	sqlite3_close(db);
	struct tree before = listing("store");

	int dirfd = openat(basefd, "store", O_PATH | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(dirfd, 0);
	sqlite3 *ro = NULL;
	cr_assert_eq(sq_open_ro(dirfd, "t.db", &ro), 0);
	cr_assert_eq(sq_begin_read(ro, 1.0), 0, "%s", sqlite3_errmsg(ro));
	cr_assert_eq(sq_reads_wal(ro), 1);
	cr_assert_eq(conn_int(ro, "SELECT count(*) FROM t"), 20);
	sql(ro, "ROLLBACK");
	sqlite3_close(ro);
	close(dirfd);
	assert_same_store(&before);
	free(before.v);
}

/* A database in WAL mode whose -wal and -shm are gone (its last connection closed between
 * the engine's look and its open): the read fails to be tried again, and leaves no empty
 * -wal or -shm behind. */
Test(capture, sq_does_not_create_wal_files)
{
	make_db("store/w.db", "WAL", 10);
	cr_assert(!exists("store/w.db-wal") && !exists("store/w.db-shm"));
	struct tree before = listing("store");

	int dirfd = openat(basefd, "store", O_PATH | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(dirfd, 0);
	sqlite3 *ro = NULL;
	cr_assert_eq(sq_open_ro(dirfd, "w.db", &ro), 0);
	cr_assert_eq(sq_begin_read(ro, 0.2), -EAGAIN, "%s", sqlite3_errmsg(ro));
	sqlite3_close(ro);
	close(dirfd);
	cr_assert(!exists("store/w.db-wal"), "the read created w.db-wal in the store");
	cr_assert(!exists("store/w.db-shm"), "the read created w.db-shm in the store");
	assert_same_store(&before);
	free(before.v);
}

/* A live WAL database whose last commit is newer than every read mark in its -shm: a reader
 * that may write the -shm records one there. Ours reads every committed row, writes nothing,
 * and the application goes on committing, during our read and after. */
Test(capture, sq_reads_a_live_wal_without_writing_its_shm)
{
	spawn_sqlite3(P("store/live.db"));
	child_run("PRAGMA journal_mode=WAL;\nPRAGMA wal_autocheckpoint=0;\n"
		  "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);");
	for (int i = 0; i < 30; i++)
		child_run("INSERT INTO t(v) VALUES (randomblob(500));");
	struct tree before = listing("store");

	int dirfd = openat(basefd, "store", O_PATH | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(dirfd, 0);
	sqlite3 *ro = NULL;
	cr_assert_eq(sq_open_ro(dirfd, "live.db", &ro), 0);
	cr_assert_eq(sq_begin_read(ro, 1.0), 0, "%s", sqlite3_errmsg(ro));
	cr_assert_eq(sq_reads_wal(ro), 1);
	cr_assert_eq(conn_int(ro, "SELECT count(*) FROM t"), 30);
	assert_same_store(&before);

	/* Pinned: a commit now is not seen; once the read ends, it is. */
	child_run("INSERT INTO t(v) VALUES (1); PRAGMA wal_checkpoint(PASSIVE);");
	cr_assert_eq(conn_int(ro, "SELECT count(*) FROM t"), 30);
	sql(ro, "ROLLBACK");
	before = (free(before.v), listing("store"));
	cr_assert_eq(sq_begin_read(ro, 1.0), 0, "%s", sqlite3_errmsg(ro));
	cr_assert_eq(conn_int(ro, "SELECT count(*) FROM t"), 31);
	sql(ro, "ROLLBACK");
	assert_same_store(&before);
	free(before.v);
	sqlite3_close(ro);
	close(dirfd);
	child_run("INSERT INTO t(v) VALUES (2);");
	child_quit();
	cr_assert_eq(query_int(P("store/live.db"), "SELECT count(*) FROM t"), 32);
}

/* ---- incremental ------------------------------------------------------------------------ */

/* The engine trusts a recorded identity only when the file's ctime was >= 2 s (CAP_RACY_NS)
 * older than the capture, because timestamps come from a coarse clock. ctime cannot be set,
 * so the only way to have "old" files is to let 2 s pass after making them. The wait is a
 * poll on that very condition with a deadline (not a blind sleep), done once for the whole
 * incremental scenario; the second capture then runs at once. */
static void wait_until_older_than_2s(const char *const *rels, size_t n)
{
	int64_t newest = 0;
	for (size_t i = 0; i < n; i++) {
		struct stat st = lst(rels[i]);
		if (ns(st.st_ctim) > newest)
			newest = ns(st.st_ctim);
	}
	const int64_t want = newest + 2000000000LL + 100000000LL; /* 0.1 s of slack */
	double deadline = ut_now() + 10;
	while (ns(ut_realtime()) < want) {
		cr_assert_lt(ut_now(), deadline, "clock did not advance");
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

Test(capture, incremental_links_unchanged_and_dates_changes)
{
	static const char *const old[] = {
		"store/same.txt", "store/dir/deep.txt", "store/changed.txt", "store/rewritten.txt",
		"store/sneaky.bin", "store/removed.txt", "store/db.sqlite3", "store/mode.txt",
	};
	mkd("store/dir", 0755);
	put_str("store/same.txt", "never changes\n");
	put_random("store/dir/deep.txt", 2 * MiB + 5, 0600);
	put_str("store/changed.txt", "version 1\n");
	put_str("store/rewritten.txt", "same bytes, new inode data\n");
	put_random("store/sneaky.bin", 4096, 0644);
	put_str("store/removed.txt", "going away\n");
	put_str("store/mode.txt", "only its mode changes\n");
	make_db("store/db.sqlite3", "DELETE", 50);
	wait_until_older_than_2s(old, sizeof old / sizeof old[0]);
	put_str("store/fresh.txt", "written just before the first capture\n");

	struct cap_stats a;
	snap("A", NULL, &a);
	/* Identities: recorded for old files, withheld for the fresh one. */
	struct mf mf;
	cr_assert_eq(mf_load(AT_FDCWD, P("out/A/" CAP_MANIFEST_NAME), &mf), 0);
	cr_assert_not_null(mf_find(&mf, "same.txt")->ident, "an old file has no identity");
	cr_assert_not_null(mf_find(&mf, "db.sqlite3")->ident, "an old database has no identity");
	cr_assert_null(mf_find(&mf, "fresh.txt")->ident,
		       "identity of a file changed < 2 s before the capture was trusted");
	mf_free(&mf);

	/* Every file of A is new there, and dated so. */
	static const char *const same[] = { "same.txt", "dir/deep.txt", "db.sqlite3" };
	struct timespec a_mtime[3];
	for (unsigned i = 0; i < 3; i++) {
		char pa[64];
		snprintf(pa, sizeof pa, "out/A/%s", same[i]);
		a_mtime[i] = lst(pa).st_mtim;
		assert_new_mtime(pa, a_mtime[i], a.cut, NULL);
	}
	struct timespec changed_a_mtime = lst("out/A/changed.txt").st_mtim;

	/* Between the captures. */
	uint8_t sneaky_a[32];
	digest_rel("out/A/sneaky.bin", sneaky_a);
	struct stat sneaky_st = lst("store/sneaky.bin");
	int fd = openat(basefd, "store/sneaky.bin", O_WRONLY | O_CLOEXEC);
	cr_assert_eq(pwrite(fd, "\x5a", 1, 2000), 1);
	struct timespec keep[2] = { sneaky_st.st_atim, sneaky_st.st_mtim };
	cr_assert_eq(futimens(fd, keep), 0); /* same size, same mtime: only ctime tells */
	close(fd);
	put_str("store/changed.txt", "version 2, longer\n");
	put_str("store/rewritten.txt", "same bytes, new inode data\n");
	put_str("store/new.txt", "new\n");
	cr_assert_eq(unlinkat(basefd, "store/removed.txt", 0), 0);
	cr_assert_eq(fchmodat(basefd, "store/mode.txt", 0600, 0), 0);

	struct cap_stats b;
	snap("B", "A", &b);
	cr_assert_gt(ns(b.cut), ns(a.cut));

	/* Unchanged and proven so: the very same inode, and A's mtime. */
	for (unsigned i = 0; i < 3; i++) {
		char pa[64], pb[64];
		snprintf(pa, sizeof pa, "out/A/%s", same[i]);
		snprintf(pb, sizeof pb, "out/B/%s", same[i]);
		struct stat sa = lst(pa), sb = lst(pb);
		cr_assert_eq(sb.st_ino, sa.st_ino, "%s was not shared with the previous snapshot",
			     same[i]);
		cr_assert_eq(ns(sb.st_mtim), ns(a_mtime[i]), "%s: mtime moved", same[i]);
	}
	cr_assert_geq(b.bytes_linked, 14 + 2 * MiB + 5, "bytes_linked %" PRIu64, b.bytes_linked);

	/* Changed: copied anew, dated at B's cut so that uploaders send it. */
	struct stat ca = lst("out/A/changed.txt"), cb = lst("out/B/changed.txt");
	cr_assert_neq(cb.st_ino, ca.st_ino);
	assert_new_mtime("changed.txt", cb.st_mtim, b.cut, &ca.st_mtim);
	uint8_t d[32], want[32];
	digest_rel("out/B/changed.txt", d);
	sha256("version 2, longer\n", 18, want);
	cr_assert_arr_eq(d, want, 32);

	/* Same size and mtime, different bytes: not fooled. */
	struct stat sb = lst("out/B/sneaky.bin"), sa = lst("out/A/sneaky.bin");
	cr_assert_neq(sb.st_ino, sa.st_ino, "sneaky.bin shared with A");
	assert_new_mtime("sneaky.bin", sb.st_mtim, b.cut, &sa.st_mtim);
	uint8_t sneaky_b[32], sneaky_store[32];
	digest_rel("out/B/sneaky.bin", sneaky_b);
	digest_rel("store/sneaky.bin", sneaky_store);
	cr_assert_arr_eq(sneaky_b, sneaky_store, 32, "sneaky.bin: snapshot has old bytes");
	cr_assert_arr_neq(sneaky_b, sneaky_a, 32);

	/* Rewritten with identical bytes, and the fresh file that could not be trusted: copied,
	 * found equal by digest, so they keep A's copy and A's mtime (no re-upload). */
	static const char *const dedup[] = { "rewritten.txt", "fresh.txt" };
	for (unsigned i = 0; i < 2; i++) {
		char pa[64], pb[64];
		snprintf(pa, sizeof pa, "out/A/%s", dedup[i]);
		snprintf(pb, sizeof pb, "out/B/%s", dedup[i]);
		struct stat ra = lst(pa), rb = lst(pb);
		cr_assert_eq(ns(rb.st_mtim), ns(ra.st_mtim), "%s: mtime moved", dedup[i]);
		cr_assert_eq(rb.st_ino, ra.st_ino, "%s: identical bytes not shared", dedup[i]);
	}

	/* Same bytes, new mode: cannot share an inode with A (that would change A's mode). */
	struct stat ma = lst("out/A/mode.txt"), mb = lst("out/B/mode.txt");
	cr_assert_eq(ma.st_mode & 07777, 0644, "the previous snapshot's file changed mode");
	cr_assert_eq(mb.st_mode & 07777, 0600);
	cr_assert_neq(mb.st_ino, ma.st_ino);
	assert_new_mtime("mode.txt", mb.st_mtim, b.cut, &ma.st_mtim);

	/* New and removed files. */
	assert_new_mtime("new.txt", lst("out/B/new.txt").st_mtim, b.cut, NULL);
	cr_assert(!exists("out/B/removed.txt"));
	cr_assert(exists("out/A/removed.txt"));

	/* A is still what it was, and both check out. */
	digest_rel("out/A/changed.txt", d);
	sha256("version 1\n", 10, want);
	cr_assert_arr_eq(d, want, 32, "the previous snapshot was modified");
	cr_assert_eq(ns(lst("out/A/changed.txt").st_mtim), ns(changed_a_mtime));
	char report[4096];
	cr_assert_eq(verify("out/A", 0, report, sizeof report), 0, "A: %s", report);
	cr_assert_eq(verify("out/B", 0, report, sizeof report), 0, "B: %s", report);
}

/* Give out/SNAP/REL as many more names (under links/N/) as the filesystem allows. 0 once a
 * link fails with EMLINK, 1 if none did in 200,000 (no limit here). */
static int use_up_links(const char *snap, const char *rel, int n)
{
	char dir[64], from[128], to[96];
	snprintf(dir, sizeof dir, "links%d", n);
	cr_assert_eq(mkdirat(basefd, dir, 0755), 0);
	snprintf(from, sizeof from, "out/%s/%s", snap, rel);
	for (int i = 0; i < 200000; i++) {
		snprintf(to, sizeof to, "%s/%d", dir, i);
		if (linkat(basefd, from, basefd, to, 0) < 0) {
			cr_assert_eq(errno, EMLINK, "link %s: %s", to, strerror(errno));
			return 0;
		}
	}
	return 1;
}

Test(capture, incremental_copies_when_the_previous_copy_takes_no_more_links)
{
	static const char *const old[] = { "store/same.txt", "store/rewritten.txt",
					   "store/db.sqlite3" };
	put_str("store/same.txt", "never changes\n");
	put_str("store/rewritten.txt", "same bytes, new inode data\n");
	make_db("store/db.sqlite3", "DELETE", 50);
	wait_until_older_than_2s(old, 3);
	struct cap_stats a, b;
	snap("A", NULL, &a);

	/* Each of A's copies is at its filesystem's link limit: sharing them fails. */
	for (int i = 0; i < 3; i++)
		if (use_up_links("A", old[i] + strlen("store/"), i))
			cr_skip_test("this filesystem has no link limit to reach");
	/* Unchanged (proven by identity, then shared: cap_copy_file, and cap_attempt for the
	 * database), and rewritten with the same bytes (copied, then found equal and shared:
	 * cap_set_times). Every link fails, so each is copied instead. */
	put_str("store/rewritten.txt", "same bytes, new inode data\n");
	snap("B", "A", &b);

	for (int i = 0; i < 3; i++) {
		const char *name = old[i] + strlen("store/");
		char pa[64], pb[64];
		uint8_t da[32], db[32];
		snprintf(pa, sizeof pa, "out/A/%s", name);
		snprintf(pb, sizeof pb, "out/B/%s", name);
		cr_assert(exists(pb), "%s is missing from the snapshot", pb);
		cr_assert_neq(lst(pb).st_ino, lst(pa).st_ino, "%s: linked past the limit?", name);
		digest_rel(pa, da);
		digest_rel(pb, db);
		cr_assert_arr_eq(da, db, 32, "%s: the copy differs", name);
		/* the bytes uploaded from A: a new mtime would make uploaders send them again */
		cr_assert_eq(ns(lst(pb).st_mtim), ns(lst(pa).st_mtim), "%s: mtime moved", name);
	}
	assert_self_contained_db("out/B/db.sqlite3");
	char report[4096];
	cr_assert_eq(verify("out/B", 0, report, sizeof report), 0, "B: %s", report);
}

/* Dates past 2262 do not fit int64 nanoseconds (the manifest's, the identities'): they must not
 * overflow (UBSan in scripts/sanitize.sh), and such files are still captured and shared. */
Test(capture, files_dated_past_2262)
{
	static const char *const old[] = { "store/future.bin", "store/dir" };
	mkd("store/dir", 0755);
	put_random("store/future.bin", 70000, 0644);
	const struct timespec far[2] = { { 10413792000, 0 }, { 10413792000, 0 } }; /* 2300 */
	cr_assert_eq(utimensat(basefd, "store/future.bin", far, 0), 0);
	cr_assert_eq(utimensat(basefd, "store/dir", far, 0), 0);
	wait_until_older_than_2s(old, 2);
	struct cap_stats a, b;
	snap("A", NULL, &a);
	snap("B", "A", &b);
	cr_assert_eq(lst("out/B/future.bin").st_ino, lst("out/A/future.bin").st_ino,
		     "an unchanged file dated 2300 was not shared");
	char report[4096];
	cr_assert_eq(verify("out/A", 0, report, sizeof report), 0, "A: %s", report);
	cr_assert_eq(verify("out/B", 0, report, sizeof report), 0, "B: %s", report);
}

/* ---- verify ------------------------------------------------------------------------------- */

static void build_small_store(void)
{
	put_str("store/a.txt", "alpha\n");
	mkd("store/seg", 0755);
	put_random("store/seg/data_level0.bin", 200000, 0644);
	put_random("store/seg/header.bin", 100, 0644);
	cr_assert_eq(symlinkat("a.txt", basefd, "store/link"), 0);
	make_db("store/chroma.sqlite3", "DELETE", 100);
}

static void flip_byte(const char *rel, off_t off)
{
	int fd = openat(basefd, rel, O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	uint8_t c;
	cr_assert_eq(pread(fd, &c, 1, off), 1);
	c ^= 0x01;
	cr_assert_eq(pwrite(fd, &c, 1, off), 1);
	close(fd);
}

static void expect_problem(const char *snapname, int ignore_extra, const char *what,
			   const char *needle)
{
	char rel[64], report[8192];
	snprintf(rel, sizeof rel, "out/%s", snapname);
	int rc = verify(rel, ignore_extra, report, sizeof report);
	cr_expect_gt(rc, 0, "%s: verify returned %d:\n%s", what, rc, report);
	cr_expect_not_null(strstr(report, needle), "%s: report does not name %s:\n%s", what, needle,
			   report);
}

Test(capture, verify_catches_every_kind_of_damage)
{
	build_small_store();
	static const char *const names_[] = { "ok", "flip", "flipdb", "gone", "extra", "wal",
					      "journal", "relink", "manifest" };
	for (unsigned i = 0; i < sizeof names_ / sizeof names_[0]; i++) {
		struct cap_stats st;
		snap(names_[i], NULL, &st);
	}
	char report[8192];
	cr_assert_eq(verify("out/ok", 0, report, sizeof report), 0, "%s", report);

	flip_byte("out/flip/seg/data_level0.bin", 123456);
	expect_problem("flip", 0, "one byte flipped", "seg/data_level0.bin");

	flip_byte("out/flipdb/chroma.sqlite3", 4096 + 500);
	expect_problem("flipdb", 0, "one byte of a database flipped", "chroma.sqlite3");

	cr_assert_eq(unlinkat(basefd, "out/gone/seg/header.bin", 0), 0);
	expect_problem("gone", 0, "a file deleted", "seg/header.bin");

	put_str("out/extra/seg/stray.bin", "not from the store\n");
	expect_problem("extra", 0, "an extra file", "seg/stray.bin");
	cr_expect_eq(verify("out/extra", 1, report, sizeof report), 0,
		     "--ignore-extra still complains:\n%s", report);

	/* A -wal beside a database: a problem even when extras are otherwise ignored. */
	put_str("out/wal/chroma.sqlite3-wal", "");
	expect_problem("wal", 0, "a -wal beside a database", "chroma.sqlite3");
	expect_problem("wal", 1, "a -wal beside a database (--ignore-extra)", "chroma.sqlite3");
	put_str("out/journal/chroma.sqlite3-journal", "");
	expect_problem("journal", 1, "a -journal beside a database", "chroma.sqlite3");

	cr_assert_eq(unlinkat(basefd, "out/relink/link", 0), 0);
	cr_assert_eq(symlinkat("seg/header.bin", basefd, "out/relink/link"), 0);
	expect_problem("relink", 0, "a symlink retargeted", "differs link");

	/* A manifest that cannot be read is not "no problems". */
	cr_assert_eq(fchmodat(basefd, "out/manifest/" CAP_MANIFEST_NAME, 0644, 0), 0);
	put_str("out/manifest/" CAP_MANIFEST_NAME, "stillfs-manifest 1\nid x\n");
	cr_expect_neq(verify("out/manifest", 0, report, sizeof report), 0);
	cr_assert_eq(unlinkat(basefd, "out/manifest/" CAP_MANIFEST_NAME, 0), 0);
	cr_expect_lt(verify("out/manifest", 0, report, sizeof report), 0);
}

/* What uploaders do to a copy is not damage: object stores drop empty directories and
 * modes, and some uploaders store a symlink's target instead of the link. */
Test(capture, verify_accepts_what_uploaders_do)
{
	build_small_store();
	mkd("store/empty-dir", 0755);
	struct cap_stats st;
	snap("snap", NULL, &st);
	cr_assert_eq(unlinkat(basefd, "out/snap/empty-dir", AT_REMOVEDIR), 0);
	cr_assert_eq(unlinkat(basefd, "out/snap/link", 0), 0);
	put_str("out/snap/link", "alpha\n");
	cr_assert_eq(fchmodat(basefd, "out/snap/seg/header.bin", 0600, 0), 0);
	struct timespec t[2] = { { 1000000000, 0 }, { 1000000000, 0 } };
	cr_assert_eq(utimensat(basefd, "out/snap/a.txt", t, 0), 0);
	char report[4096];
	cr_assert_eq(verify("out/snap", 0, report, sizeof report), 0, "%s", report);
}

/* Replace the digest the manifest of snapshot NAME records for REL with the file's current
 * one, and write the manifest again: damage that a digest cannot see, so that only the
 * database checks are left. */
static void reseal(const char *name, const char *rel, const uint8_t old[32])
{
	char mpath[128], fpath[128];
	struct mf m;
	snprintf(mpath, sizeof mpath, "out/%s/" CAP_MANIFEST_NAME, name);
	snprintf(fpath, sizeof fpath, "out/%s/%s", name, rel);
	cr_assert_eq(mf_load(basefd, mpath, &m), 0, "%s", m.why);
	struct mf_entry *e = (struct mf_entry *)mf_find(&m, rel);
	cr_assert_not_null(e, "%s not in the manifest", rel);
	cr_assert_arr_eq(e->digest, old, 32, "the manifest has another digest of %s", rel);
	digest_rel(fpath, e->digest);
	cr_assert_eq(unlinkat(basefd, mpath, 0), 0);
	int fd = openat(basefd, mpath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
	cr_assert_geq(fd, 0);
	FILE *f = fdopen(fd, "w");
	cr_assert_eq(mf_write(f, &m), 0);
	cr_assert_eq(fclose(f), 0);
	mf_free(&m);
}

Test(capture, verify_checks_databases_beyond_their_digest)
{
	build_small_store();
	struct cap_stats st;
	snap("corrupt", NULL, &st);
	snap("walhdr", NULL, &st);
	uint8_t d[32];
	digest_rel("out/corrupt/chroma.sqlite3", d);

	/* A b-tree page with an impossible page type: same size, and resealed. */
	int fd = openat(basefd, "out/corrupt/chroma.sqlite3", O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, "\x00", 1, 4096), 1);
	close(fd);
	reseal("corrupt", "chroma.sqlite3", d);
	char report[4096];
	cr_assert_eq(verify("out/corrupt", 0, report, sizeof report), 1,
		     "integrity_check did not run or did not fail:\n%s", report);
	cr_assert_not_null(strstr(report, "corrupt chroma.sqlite3"), "%s", report);
	struct vf_opts quick = { .quick = 1 };
	FILE *f = fmemopen(report, sizeof report, "w");
	cr_assert_eq(vf_verify(P("out/corrupt"), &quick, f), 0, "--quick ran integrity_check");
	fclose(f);

	/* A WAL-mode header (bytes 18-19 = 2): not self-contained, though intact. */
	fd = openat(basefd, "out/walhdr/chroma.sqlite3", O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, "\x02\x02", 2, 18), 2);
	close(fd);
	reseal("walhdr", "chroma.sqlite3", d);
	cr_assert_gt(verify("out/walhdr", 0, report, sizeof report), 0, "%s", report);
	cr_assert_not_null(strstr(report, "not-self-contained chroma.sqlite3"), "%s", report);
}
