/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for sqlcap.c: recognising a database, SQLite's locks as another process sees them
 * (the SHARED lock we take, a writer's RESERVED, a hot journal), reading through the read-only
 * connection, copies by backup (whole, and into an earlier copy writing only what changed),
 * finishing a copy, and the integrity check. Writers run in a child process, since SQLite's
 * POSIX locks and our OFD locks would be one owner's in one process. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "copy.h"
#include "dbdelta.h"
#include "sqlcap.h"
#include "util.h"

static char dir[64];
static int dirfd_ = -1;

static void setup(void)
{
	snprintf(dir, sizeof dir, "/tmp/stillfs-ut-sq-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	dirfd_ = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(dirfd_, 0);
	log_set_quiet(1);
}

static void teardown(void)
{
	int fd = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cp_rmtree(fd, dir + strlen("/tmp/"));
	close(fd);
	close(dirfd_);
}

TestSuite(sqlcap, .init = setup, .fini = teardown, .timeout = 60);

static void path_of(const char *name, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", dir, name);
}

static void sql(const char *name, const char *stmts)
{
	char p[128];
	sqlite3 *db;
	path_of(name, p, sizeof p);
	cr_assert_eq(sqlite3_open(p, &db), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(db, stmts, NULL, NULL, NULL), SQLITE_OK, "%s: %s", stmts,
		     sqlite3_errmsg(db));
	sqlite3_close(db);
}

/* A database of n rows of 1 KiB, rollback mode unless wal. */
static void make_db(const char *name, int rows, int wal)
{
	char s[512];
	snprintf(s, sizeof s,
		 "PRAGMA journal_mode=%s; CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB);"
		 "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d)"
		 " INSERT INTO t SELECT i, randomblob(1024) FROM n;", wal ? "WAL" : "DELETE", rows);
	sql(name, s);
}

/* A writer in another process: runs stmts on name, tells us, and holds whatever they left
 * (an open transaction) until we let go; on step(), runs then, tells us and waits again. (A
 * child forked after this process has opened the database would share its SQLite state.) */
struct holder {
	pid_t pid;
	int go;    /* write 'g': the child ends; 's': it runs `then` */
	int ready;
};

static void wait_ready(struct holder h)
{
	char c;
	cr_assert_eq(read(h.ready, &c, 1), 1, "the writer failed");
}

static struct holder hold2(const char *name, const char *stmts, const char *then)
{
	int ready[2], go[2];
	cr_assert_eq(pipe(ready), 0);
	cr_assert_eq(pipe(go), 0);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		char p[128], c = 0;
		sqlite3 *db;
		close(ready[0]);
		close(go[1]);
		path_of(name, p, sizeof p);
		if (sqlite3_open(p, &db) != SQLITE_OK ||
		    sqlite3_exec(db, stmts, NULL, NULL, NULL) != SQLITE_OK)
			_exit(3);
		for (;;) {
			if (write(ready[1], "r", 1) != 1 || read(go[0], &c, 1) != 1)
				_exit(4);
			if (c != 's')
				break;
			if (!then || sqlite3_exec(db, then, NULL, NULL, NULL) != SQLITE_OK)
				_exit(5);
		}
		_exit(0);   /* without committing: the locks go with the process */
	}
	close(ready[1]);
	close(go[0]);
	struct holder h = { pid, go[1], ready[0] };
	wait_ready(h);
	return h;
}

static struct holder hold(const char *name, const char *stmts)
{
	return hold2(name, stmts, NULL);
}

static void step(struct holder h)
{
	cr_assert_eq(write(h.go, "s", 1), 1);
	wait_ready(h);
}

static void release(struct holder h)
{
	int st;
	cr_assert_eq(write(h.go, "g", 1), 1);
	close(h.go);
	close(h.ready);
	cr_assert_eq(waitpid(h.pid, &st, 0), h.pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer status %#x", st);
}

static int open_db(const char *name)
{
	int fd = openat(dirfd_, name, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "%s: %s", name, strerror(errno));
	return fd;
}

Test(sqlcap, header)
{
	uint8_t h[16];
	memcpy(h, "SQLite format 3", 16);
	cr_assert(sq_is_header(h));
	h[15] = ' ';
	cr_assert(!sq_is_header(h), "the header ends in a NUL");
	memcpy(h, "SQLite format 2\0", 16);
	cr_assert(!sq_is_header(h));
}

Test(sqlcap, shared_lock_waits_for_an_exclusive_writer_then_holds_writers_off)
{
	make_db("a.db", 10, 0);
	int fd = open_db("a.db");
	/* A writer between its EXCLUSIVE lock and its commit: no SHARED lock for us. */
	struct holder w = hold("a.db", "BEGIN EXCLUSIVE; UPDATE t SET v = x'00' WHERE k = 1;");
	double t0 = ut_now();
	cr_assert_eq(sq_lock_shared(fd, 0.2), -EAGAIN);
	double took = ut_now() - t0;
	cr_assert(took >= 0.2 && took < 2, "gave up after %.3f s, not the 0.2 s asked", took);
	release(w);
	cr_assert_eq(sq_lock_shared(fd, 0.2), 0);
	/* Held: a writer cannot commit (it needs EXCLUSIVE); our lock is an OFD lock, so closing
	 * another descriptor of the file in this process does not drop it. */
	close(open_db("a.db"));
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		char p[128];
		sqlite3 *db;
		path_of("a.db", p, sizeof p);
		if (sqlite3_open(p, &db) != SQLITE_OK)
			_exit(3);
		int rc = sqlite3_exec(db, "UPDATE t SET v = x'01' WHERE k = 2", NULL, NULL, NULL);
		_exit(rc == SQLITE_BUSY ? 0 : 5);
	}
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a writer committed under our lock");
	sq_unlock(fd);
	sql("a.db", "UPDATE t SET v = x'01' WHERE k = 2");
	cr_assert_eq(sq_lock_shared(-1, 0), -EBADF);
	close(fd);
}

Test(sqlcap, writer_active_sees_a_reserved_lock)
{
	make_db("a.db", 10, 0);
	int fd = open_db("a.db");
	cr_assert_eq(sq_writer_active(fd), 0);
	/* A cache of one page spills: the journal is synced, with its magic, before the
	 * database is written, as a dead writer's would be. */
	struct holder w = hold("a.db", "PRAGMA cache_size=1; BEGIN IMMEDIATE;"
				       "UPDATE t SET v = randomblob(1024);");
	cr_assert_eq(sq_writer_active(fd), 1);
	/* But this writer is alive (it holds RESERVED): its journal is not hot. */
	uint8_t head[8];
	int j = openat(dirfd_, "a.db-journal", O_RDONLY | O_CLOEXEC);
	cr_assert_geq(j, 0, "the writer has no journal");
	cr_assert_eq(pread(j, head, 8, 0), 8);
	cr_assert_eq(head[0], 0xd9, "the journal has no magic yet: nothing is proved");
	close(j);
	cr_assert_eq(sq_journal_is_hot(dirfd_, "a.db", fd), 0);
	release(w);
	cr_assert_eq(sq_writer_active(fd), 0);
	cr_assert_eq(sq_writer_active(-1), -EBADF);
	close(fd);
}

static void write_journal(const void *head, size_t n)
{
	int fd = openat(dirfd_, "a.db-journal", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, head, n), (ssize_t)n);
	close(fd);
}

Test(sqlcap, hot_journal_only_with_its_magic_and_no_writer)
{
	static const uint8_t magic[12] = { 0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7, 1, 2, 3 };
	make_db("a.db", 10, 0);
	int fd = open_db("a.db");
	cr_assert_eq(sq_journal_is_hot(dirfd_, "a.db", fd), 0, "no journal at all");
	write_journal(magic, sizeof magic);
	cr_assert_eq(sq_journal_is_hot(dirfd_, "a.db", fd), 1, "a dead writer's journal");
	write_journal(magic, 7);
	cr_assert_eq(sq_journal_is_hot(dirfd_, "a.db", fd), 0, "too short for the magic");
	write_journal("\0\0\0\0\0\0\0\0\0\0\0\0", 12);
	cr_assert_eq(sq_journal_is_hot(dirfd_, "a.db", fd), 0, "zeroed (journal_mode=PERSIST)");
	cr_assert_eq(unlinkat(dirfd_, "a.db-journal", 0), 0);
	cr_assert_eq(mkdirat(dirfd_, "a.db-journal", 0700), 0);
	cr_assert_eq(sq_journal_is_hot(dirfd_, "a.db", fd), 0, "not a file");
	cr_assert_eq(unlinkat(dirfd_, "a.db-journal", AT_REMOVEDIR), 0);
	char longname[5000];
	memset(longname, 'n', sizeof longname - 1);
	longname[sizeof longname - 1] = 0;
	cr_assert_eq(sq_journal_is_hot(dirfd_, longname, fd), -ENAMETOOLONG);
	close(fd);
}

static long long count_rows(sqlite3 *db)
{
	sqlite3_stmt *st;
	cr_assert_eq(sqlite3_prepare_v2(db, "SELECT count(*), sum(length(v)) FROM t", -1, &st,
					NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
	long long n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

Test(sqlcap, read_only_connection_and_whole_copy)
{
	char p[128], err[256] = "";
	sqlite3 *ro;
	make_db("a.db", 300, 0);
	cr_assert_eq(sq_open_ro(dirfd_, "a.db", &ro), 0);
	cr_assert_eq(sq_begin_read(ro, 1), 0, "%s", sqlite3_errmsg(ro));
	cr_assert_eq(sq_reads_wal(ro), 0);
	uint8_t hdr[SQ_WAL_HDR];
	(void)hdr;  /* sq_wal_header is only for a WAL reader (see sqlcap.h) */
	cr_assert_eq(count_rows(ro), 300);
	path_of("copy.db", p, sizeof p);
	cr_assert_eq(sq_backup_to(ro, p), 0);
	/* A read-only connection cannot write the store. */
	cr_assert_neq(sqlite3_exec(ro, "UPDATE t SET v = x'00'", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(ro);
	cr_assert_eq(sq_integrity(p, err, sizeof err), 0, "%s", err);
	sqlite3 *c;
	cr_assert_eq(sqlite3_open(p, &c), SQLITE_OK);
	cr_assert_eq(count_rows(c), 300);
	sqlite3_close(c);

	/* A name that is not there is no database to read: the open fails, nothing is created. */
	cr_assert_eq(sq_open_ro(dirfd_, "none.db", &ro), -EIO);
	cr_assert_null(ro);
	cr_assert_neq(faccessat(dirfd_, "none.db", F_OK, 0), 0);
	/* A symlink in the store is never followed. */
	cr_assert_eq(symlinkat("a.db", dirfd_, "link.db"), 0);
	cr_assert_eq(sq_open_ro(dirfd_, "link.db", &ro), -EIO);
}

Test(sqlcap, a_wal_reader_sees_its_snapshot_and_the_index_header_changes_with_commits)
{
	sqlite3 *ro;
	make_db("w.db", 50, 1);
	/* Another process keeps the WAL (and its index) alive and commits. */
	struct holder w = hold2("w.db", "PRAGMA wal_autocheckpoint=0; INSERT INTO t VALUES(1000, x'00');",
				"INSERT INTO t VALUES(1001, x'00')");
	cr_assert_eq(sq_open_ro(dirfd_, "w.db", &ro), 0);
	cr_assert_eq(sq_begin_read(ro, 1), 0, "%s", sqlite3_errmsg(ro));
	cr_assert_eq(sq_reads_wal(ro), 1);
	uint8_t a[SQ_WAL_HDR], b[SQ_WAL_HDR];
	cr_assert_eq(sq_wal_header(ro, a), 0);
	cr_assert_eq(count_rows(ro), 51);
	/* (Committed by the other process: ours maps the -shm read-only for all its
	 * connections.) */
	step(w);
	cr_assert_eq(sq_wal_header(ro, b), 0);
	cr_assert(memcmp(a, b, sizeof a), "a commit left the WAL-index header as it was");
	cr_assert_eq(count_rows(ro), 51, "the read transaction did not pin its snapshot");
	sqlite3_close(ro);
	release(w);
}

Test(sqlcap, backup_into_an_earlier_copy_writes_only_what_changed)
{
	char p[128], err[256] = "";
	sqlite3 *ro;
	struct dd_blocks b;
	struct dd_result r;
	uint64_t written = 1;
	make_db("a.db", 3000, 0);   /* about 3 MiB: several blocks */
	path_of("copy.db", p, sizeof p);
	cr_assert_eq(sq_open_ro(dirfd_, "a.db", &ro), 0);
	cr_assert_eq(sq_begin_read(ro, 1), 0);
	cr_assert_eq(sq_backup_to(ro, p), 0);
	sqlite3_close(ro);
	int copy = open(p, O_RDONLY | O_CLOEXEC);
	dd_init(&b);
	struct stat st;
	cr_assert_eq(fstat(copy, &st), 0);
	cr_assert_eq(dd_reset(&b, (uint64_t)st.st_size), 0);
	cr_assert_eq(dd_rehash(copy, 1, &b), 0);
	cr_assert(dd_all_valid(&b));

	/* One row changes: a page or two of the copy are written, and only their block is
	 * invalid; the result is the live database again. */
	sql("a.db", "UPDATE t SET v = randomblob(1024) WHERE k = 2000");
	cr_assert_eq(sq_open_ro(dirfd_, "a.db", &ro), 0);
	cr_assert_eq(sq_begin_read(ro, 1), 0);
	cr_assert_eq(sq_backup_into(ro, p, &b, &written), 0);
	sqlite3_close(ro);
	cr_assert(written > 0 && written <= 4 * 4096, "wrote %llu bytes for one row",
		  (unsigned long long)written);
	size_t invalid = 0;
	for (size_t i = 0; i < b.n; i++)
		invalid += !b.valid[i];
	cr_assert(invalid >= 1 && invalid <= 2, "%zu of %zu blocks invalid", invalid, b.n);
	cr_assert_eq(dd_rehash(copy, 1, &b), 0);
	struct cp_result ref;
	uint8_t d[32];
	cr_assert_eq(cp_digest_fd(copy, &ref), 0);
	dd_digest(&b, d);
	cr_assert_arr_eq(d, ref.digest, 32, "the blocks do not describe the copy");
	cr_assert_eq(sq_integrity(p, err, sizeof err), 0, "%s", err);
	sqlite3 *c, *l;
	sqlite3_stmt *s1, *s2;
	char lp[128];
	path_of("a.db", lp, sizeof lp);
	cr_assert_eq(sqlite3_open(p, &c), SQLITE_OK);
	cr_assert_eq(sqlite3_open(lp, &l), SQLITE_OK);
	const char *q = "SELECT v FROM t WHERE k = 2000";
	cr_assert_eq(sqlite3_prepare_v2(c, q, -1, &s1, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_prepare_v2(l, q, -1, &s2, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_step(s1), SQLITE_ROW);
	cr_assert_eq(sqlite3_step(s2), SQLITE_ROW);
	cr_assert_arr_eq(sqlite3_column_blob(s1, 0), sqlite3_column_blob(s2, 0), 1024);
	sqlite3_finalize(s1), sqlite3_finalize(s2);
	sqlite3_close(c), sqlite3_close(l);

	/* Nothing changed since: at most the header page is written (the copy's own change
	 * counter), not the 3 MiB. */
	cr_assert_eq(sq_open_ro(dirfd_, "a.db", &ro), 0);
	cr_assert_eq(sq_begin_read(ro, 1), 0);
	cr_assert_eq(sq_backup_into(ro, p, &b, &written), 0);
	cr_assert_leq(written, 4096, "wrote %llu bytes of an unchanged database",
		      (unsigned long long)written);
	sqlite3_close(ro);
	dd_free(&b);
	close(copy);
	(void)r;
}

Test(sqlcap, finish_copy_makes_a_wal_copy_self_contained)
{
	char p[128], err[256] = "";
	uint8_t h[20];
	make_db("w.db", 20, 1);
	path_of("w.db", p, sizeof p);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	cr_assert_eq(pread(fd, h, sizeof h, 0), (ssize_t)sizeof h);
	cr_assert_eq(h[18], 2, "not a WAL database to begin with");
	close(fd);
	cr_assert_eq(sq_finish_copy(p, err, sizeof err), 0, "%s", err);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	cr_assert_eq(pread(fd, h, sizeof h, 0), (ssize_t)sizeof h);
	cr_assert(h[18] == 1 && h[19] == 1, "header bytes 18-19: %d %d", h[18], h[19]);
	close(fd);
	cr_assert_neq(faccessat(dirfd_, "w.db-wal", F_OK, 0), 0, "the -wal outlived the switch");

	/* Not a database: a clear error. */
	int bad = openat(dirfd_, "junk.db", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	cr_assert_eq(write(bad, "this is not a database file, not at all, not at all......", 58),
		     58);
	close(bad);
	path_of("junk.db", p, sizeof p);
	cr_assert_eq(sq_finish_copy(p, err, sizeof err), -EIO);
	cr_assert_neq(err[0], 0, "no message");
}

Test(sqlcap, integrity_finds_a_damaged_page)
{
	char p[128], err[256] = "";
	make_db("a.db", 200, 0);
	path_of("a.db", p, sizeof p);
	cr_assert_eq(sq_integrity(p, err, sizeof err), 0, "%s", err);
	/* Zero a page in the middle of the table's b-tree. */
	int fd = open(p, O_WRONLY | O_CLOEXEC);
	uint8_t zero[4096] = { 0 };
	cr_assert_eq(pwrite(fd, zero, sizeof zero, 40 * 4096), (ssize_t)sizeof zero);
	close(fd);
	cr_assert_eq(sq_integrity(p, err, sizeof err), -EBADMSG);
	cr_assert_neq(err[0], 0, "no message");
	path_of("none.db", p, sizeof p);
	cr_assert_eq(sq_integrity(p, err, sizeof err), -EBADMSG);
	cr_assert_neq(faccessat(dirfd_, "none.db", F_OK, 0), 0, "the check created the file");
}
