/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * hnswwriter: a ChromaDB-like vector segment writer, and the checker of copies of its store.
 *
 *   hnswwriter run DIR [options]   insert batches into a real-format HNSW segment under
 *                                  DIR/<segment uuid>/ and persist it in place after each
 *                                  batch, as chroma does; with --db, then commit the segment's
 *                                  max_seq_id to DIR/chroma.sqlite3 (rollback journal)
 *   hnswwriter check DIR           judge a copy of such a store: every segment with hv_check,
 *                                  and the database's max_seq_id against the segment's count
 *
 * Every inserted record has the next sequence number, so a segment holding C elements has
 * applied records 1..C, and a max_seq_id above C in the database claims records the copied
 * segment does not hold (chroma would never replay them).
 * Exit status of check: 0 consistent, 1 torn (one line says why), 2 usage or I/O error.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "hnsw.h"
#include "hnswgen.h"

#define SEGMENT "7d0c5b1e-2f4a-4c8e-9b3d-6a1f0e2d4c58"
#define DB_NAME "chroma.sqlite3"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* One line on stderr, "what[: strerror(err)]", and exit status 2. */
__attribute__((noreturn)) static void die(const char *what, const char *arg, int err)
{
	fprintf(stderr, "hnswwriter: %s%s%s%s%s\n", arg, *arg ? ": " : "", what, err ? ": " : "",
		err ? strerror(err) : "");
	exit(2);
}

static void sleep_ms(long ms)
{
	struct timespec t = { ms / 1000, ms % 1000 * 1000000L };
	while (nanosleep(&t, &t) < 0 && errno == EINTR && !stop)
		;
}

/* A stall (GC pause, I/O pressure) at one random step of each persist. */
struct stall {
	long max_ms, ms;
	int step;
	uint64_t rng;
};

static uint64_t next(uint64_t *s)
{
	*s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
	return *s;
}

static void stall_at(void *arg, int step)
{
	struct stall *s = arg;
	if (step == s->step && s->ms)
		sleep_ms(s->ms);
}

static void db_exec(sqlite3 *db, const char *sql)
{
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
		die(sqlite3_errmsg(db), "chroma.sqlite3", 0);
}

static void db_commit(sqlite3 *db, uint64_t seq)
{
	sqlite3_stmt *st;

	db_exec(db, "BEGIN IMMEDIATE");
	if (sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO max_seq_id(segment_id, seq_id) "
			       "VALUES(?1, ?2)", -1, &st, NULL) != SQLITE_OK)
		die(sqlite3_errmsg(db), "chroma.sqlite3", 0);
	sqlite3_bind_text(st, 1, SEGMENT, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)seq);
	if (sqlite3_step(st) != SQLITE_DONE)
		die(sqlite3_errmsg(db), "chroma.sqlite3", 0);
	sqlite3_finalize(st);
	db_exec(db, "COMMIT");
}

static int run(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dim", 1, NULL, 'd' }, { "m", 1, NULL, 'm' }, { "batch", 1, NULL, 'b' },
		{ "batches", 1, NULL, 'n' }, { "capacity", 1, NULL, 'c' },
		{ "interval-ms", 1, NULL, 'i' }, { "stall-ms", 1, NULL, 's' },
		{ "delete-every", 1, NULL, 'x' }, { "seed", 1, NULL, 'r' }, { "db", 0, NULL, 'D' },
		{ "ready", 1, NULL, 'R' }, { 0 },
	};
	unsigned long dim = 8, m = 16, batch = 20, batches = 0, capacity = 1000, interval = 20;
	unsigned long delete_every = 0, seed = 1;
	const char *ready = NULL, *dir;
	struct stall st = { 0 };
	struct hg_index x;
	sqlite3 *db = NULL;
	int c, dirfd, segfd, rc, use_db = 0;
	unsigned long done = 0;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		unsigned long v = optarg ? strtoul(optarg, NULL, 10) : 0;
		switch (c) {
		case 'd': dim = v; break;
		case 'm': m = v; break;
		case 'b': batch = v; break;
		case 'n': batches = v; break;
		case 'c': capacity = v; break;
		case 'i': interval = v; break;
		case 's': st.max_ms = (long)v; break;
		case 'x': delete_every = v; break;
		case 'r': seed = v; break;
		case 'D': use_db = 1; break;
		case 'R': ready = optarg; break;
		default: return 2;
		}
	}
	if (optind != argc - 1 || !dim || m < 2 || m > 32 || !batch || !capacity)
		die("usage: hnswwriter run DIR [--dim N] [--m 2..32] [--batch N] [--batches N] "
		    "[--capacity N] [--interval-ms N] [--stall-ms N] [--delete-every N] [--seed N] "
		    "[--db] [--ready FILE]", "", 0);
	dir = argv[optind];
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		die("cannot open", dir, errno);
	if ((dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		die("cannot open", dir, errno);
	if (mkdirat(dirfd, SEGMENT, 0755) < 0 && errno != EEXIST)
		die("cannot open", SEGMENT, errno);
	if ((segfd = openat(dirfd, SEGMENT, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		die("cannot open", SEGMENT, errno);
	if (use_db) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", dir, DB_NAME);
		if (sqlite3_open(path, &db) != SQLITE_OK)
			die("cannot open", path, 0);
		sqlite3_busy_timeout(db, 5000);
		db_exec(db, "PRAGMA journal_mode=DELETE; CREATE TABLE IF NOT EXISTS max_seq_id("
			    "segment_id TEXT PRIMARY KEY, seq_id INTEGER NOT NULL)");
	}
	if ((rc = hg_create(&x, segfd, (unsigned)dim, (unsigned)m, capacity, seed)) < 0)
		die("creating the index", SEGMENT, -rc);
	st.rng = seed * 2654435761u + 7;
	x.stall = stall_at, x.stall_arg = &st;
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	while (!stop && (!batches || done < batches)) {
		if ((rc = hg_ensure(&x, batch)) < 0 || (rc = hg_add(&x, batch)) < 0)
			die("inserting", SEGMENT, -rc);
		if (delete_every && done % delete_every == delete_every - 1)
			for (uint64_t t = 0; t < x.count; t++)  /* the first live one from a random id */
				if (hg_delete(&x, (next(&st.rng) + t) % x.count) == 0)
					break;
		st.step = 1 + (int)(next(&st.rng) % 5);
		st.ms = st.max_ms ? (long)(next(&st.rng) % (uint64_t)(st.max_ms + 1)) : 0;
		if ((rc = hg_persist(&x)) < 0)
			die("persisting", SEGMENT, -rc);
		if (db)
			db_commit(db, x.total_added);
		if (++done == 1 && ready)
			close(open(ready, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
		if (interval && !stop)
			sleep_ms((long)interval);
	}
	printf("hnswwriter: %lu persists, %llu elements\n", done, (unsigned long long)x.count);
	hg_close(&x);
	if (db)
		sqlite3_close(db);
	close(segfd);
	close(dirfd);
	return 0;
}

/* The element count header.bin records, read directly (offset 20, native size_t). */
static uint64_t header_count(int segfd)
{
	uint64_t n = 0;
	int fd = openat(segfd, "header.bin", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0 || pread(fd, &n, sizeof n, 20) != (ssize_t)sizeof n)
		n = 0;
	if (fd >= 0)
		close(fd);
	return n;
}

static int check(const char *dir)
{
	char why[512];
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), nseg = 0;
	DIR *d;
	struct dirent *e;
	sqlite3 *db;
	sqlite3_stmt *st;
	char path[4096];
	struct stat sb;

	if (dirfd < 0 || !(d = fdopendir(dup(dirfd))))
		die("cannot open", dir, errno);
	while ((e = readdir(d))) {
		int fd, rc;
		if (e->d_name[0] == '.')
			continue;
		fd = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (hv_is_segment(fd)) {
			nseg++;
			if ((rc = hv_check(fd, why, sizeof why)) < 0)
				die("checking", e->d_name, -rc);
			if (rc) {
				printf("torn: %s: %s\n", e->d_name, why);
				return 1;
			}
		}
		close(fd);
	}
	closedir(d);
	/* The database is judged as chroma would open it: a hot journal is rolled back first, which
	 * is why the copy is opened writable. */
	snprintf(path, sizeof path, "%s/%s", dir, DB_NAME);
	if (stat(path, &sb) < 0) {
		printf("ok: %d segment(s) consistent, no database\n", nseg);
		return 0;
	}
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "SELECT segment_id, seq_id FROM max_seq_id", -1, &st, NULL) !=
		    SQLITE_OK)
		die("cannot read max_seq_id", path, 0);
	int rows = 0;
	while (sqlite3_step(st) == SQLITE_ROW) {
		rows++;
		const char *seg = (const char *)sqlite3_column_text(st, 0);
		uint64_t seq = (uint64_t)sqlite3_column_int64(st, 1), count;
		int fd = openat(dirfd, seg, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		count = fd >= 0 ? header_count(fd) : 0;
		if (fd >= 0)
			close(fd);
		if (seq > count) {
			printf("torn: %s: chroma.sqlite3 has max_seq_id %llu, the segment holds only %llu "
			       "records\n", seg, (unsigned long long)seq, (unsigned long long)count);
			return 1;
		}
		printf("ok: %d segment(s) consistent, max_seq_id %llu <= %llu records\n", nseg,
		       (unsigned long long)seq, (unsigned long long)count);
	}
	if (!rows)
		printf("ok: %d segment(s) consistent, no max_seq_id yet\n", nseg);
	sqlite3_finalize(st);
	sqlite3_close(db);
	close(dirfd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "run"))
		return run(argc - 1, argv + 1);
	if (argc == 3 && !strcmp(argv[1], "check"))
		return check(argv[2]);
	fprintf(stderr, "usage: hnswwriter run DIR [options] | hnswwriter check DIR\n");
	return 2;
}
