/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * torture: the writer and the checker behind every stillfs consistency test.
 *
 * The store it writes is modelled on a ChromaDB persist directory: a rollback-journal database
 * that receives every record first, an HNSW-like segment folder rewritten in place every K
 * records, and a WAL database committed in lock-step with the first one, so that a copy which is
 * not one instant shows up as a counter gap.  `check` judges a copy of such a store; `hotjournal`
 * and `hotcheck` produce and judge a database left behind by a writer that crashed mid-commit.
 *
 * Segment files are a pure function of (file, persist seq): the checker can verify any file on
 * its own (header checksum + content checksum, every 4 KiB block stamped with its seq) and can
 * recompute what persist P looked like to validate the max_seq_id row.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

/* ---- store layout --------------------------------------------------------------------------- */

#define CHROMA_DB "chroma.sqlite3"
#define WAL_DB "wal.sqlite3"
#define HOT_DB "hot.sqlite3"
/* ChromaDB names a segment folder after the segment's UUID. */
#define SEG_DIR "2c5d1e8a-7b3f-4e0a-9d6c-1f8b3a5e7c90"

enum { SEG_HEADER, SEG_DATA, SEG_LENGTH, SEG_LINKS, SEG_META, SEG_COUNT };
/* Listed in ChromaDB's persist order, which the writer follows. */
static const char *const seg_names[SEG_COUNT] = {
	"header.bin", "data_level0.bin", "length.bin", "link_lists.bin", "index_metadata.pickle",
};

#define SEG_MAGIC "STLTORT1"
#define SEG_HDR_LEN 64
#define SEG_BLOCK 4096
/* Several pwrite calls per file, so that a concurrent reader can see a mix of two persists. */
#define SEG_CHUNK (64 * 1024)
#define SEG_DATA_LEN (3u << 20)
#define SEG_MAX_LEN SEG_DATA_LEN

#define STATIC_A "static/a.txt"
#define STATIC_B "static/deep/b.bin"
#define STATIC_EMPTY "static/empty.txt"
#define STATIC_A_TEXT "This file never changes: every snapshot must hold it byte for byte.\n"
#define STATIC_B_LEN (96u * 1024)

#define QUEUE_PAYLOAD 256
#define LOG_PAYLOAD 32
#define HOT_ROWS 2000

#define BUSY_TIMEOUT_MS 600000

/* ---- errors --------------------------------------------------------------------------------- */

/* init/write/hotjournal failures exit 1; a checker that could not run exits 3 so that a test
 * never mistakes "the checker broke" for "the checker caught an inconsistency" (exit 1). */
static int fatal_status = 1;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	fflush(stdout);
	fputs("torture: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(fatal_status);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		die("out of memory (%zu bytes)", n);
	return p;
}

static void mkpath(char *buf, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void mkpath(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size)
		die("path too long: %s", buf);
}

/* ---- content generation --------------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15u;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
	return x ^ (x >> 31);
}

static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t hash_bytes(const unsigned char *p, size_t n)
{
	uint64_t h = 0x243f6a8885a308d3u ^ n;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		h ^= get64(p + i) * 0x9e3779b97f4a7c15u;
		h = ((h << 31) | (h >> 33)) * 0xbf58476d1ce4e5b9u;
	}
	for (; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3u;
	return mix64(h);
}

/* index_metadata.pickle changes length between persists, like the real pickle does, so that a
 * copy racing its truncate+rewrite can come out short or long. */
static size_t seg_len(int f, uint64_t seq)
{
	switch (f) {
	case SEG_HEADER: return 128;
	case SEG_DATA: return SEG_DATA_LEN;
	case SEG_LENGTH: return 64 * 1024;
	case SEG_LINKS: return 512 * 1024;
	default: return 2048 + 8 * (size_t)(mix64(seq ^ 0x6d657461u) % 1024);
	}
}

static size_t seg_max_len(int f)
{
	return f == SEG_META ? 2048 + 8 * 1023 : seg_len(f, 0);
}

/*
 * Fills buf with file f as persist seq writes it and returns its content checksum.
 * Header (64 bytes): magic, file id, seq, length, content checksum, header checksum.  Every
 * SEG_BLOCK-aligned body word holds seq so that a torn file names the persists it mixes.
 */
static uint64_t seg_fill(unsigned char *buf, int f, uint64_t seq)
{
	size_t len = seg_len(f, seq);
	uint64_t base = mix64(seq ^ ((uint64_t)(f + 1) << 56));
	for (size_t off = SEG_HDR_LEN; off + 8 <= len; off += 8) {
		uint64_t w;
		if (off % SEG_BLOCK == 0)
			w = seq;
		else if (off % SEG_BLOCK == 8)
			w = off;
		else
			w = mix64(base + off);
		put64(buf + off, w);
	}
	memset(buf, 0, SEG_HDR_LEN);
	memcpy(buf, SEG_MAGIC, 8);
	put64(buf + 8, (uint64_t)f);
	put64(buf + 16, seq);
	put64(buf + 24, len);
	uint64_t sum = hash_bytes(buf + SEG_HDR_LEN, len - SEG_HDR_LEN);
	put64(buf + 32, sum);
	put64(buf + 56, hash_bytes(buf, 56));
	return sum;
}

/* What max_seq_id.checksum holds for persist seq: ties the database row to the file contents. */
static void seg_digest_text(uint64_t seq, const uint64_t sums[SEG_COUNT], char out[17])
{
	uint64_t d = mix64(seq);
	for (int f = 0; f < SEG_COUNT; f++)
		d = mix64(d ^ sums[f]);
	snprintf(out, 17, "%016" PRIx64, d);
}

static void seg_digest_for(uint64_t seq, unsigned char *scratch, char out[17])
{
	uint64_t sums[SEG_COUNT];
	for (int f = 0; f < SEG_COUNT; f++)
		sums[f] = seg_fill(scratch, f, seq);
	seg_digest_text(seq, sums, out);
}

static void static_b_fill(unsigned char *buf)
{
	for (size_t off = 0; off < STATIC_B_LEN; off += 8)
		put64(buf + off, mix64(0x5354415449430000u + off));
}

static void payload_fill(unsigned char *buf, size_t len, uint64_t seq)
{
	for (size_t off = 0; off + 8 <= len; off += 8)
		put64(buf + off, mix64((seq << 20) + off));
}

/* ---- file helpers --------------------------------------------------------------------------- */

static int pwrite_all(int fd, const unsigned char *buf, size_t len, off_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, buf, len, off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

/* Writes the file in SEG_CHUNK pieces at their offsets, as an in-place rewrite does. */
static int write_chunked(int fd, const unsigned char *buf, size_t len)
{
	for (size_t off = 0; off < len; off += SEG_CHUNK) {
		size_t n = len - off < SEG_CHUNK ? len - off : SEG_CHUNK;
		int rc = pwrite_all(fd, buf + off, n, (off_t)off);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int write_new_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	int rc = pwrite_all(fd, buf, len, 0);
	if (close(fd) != 0 && rc == 0)
		rc = -errno;
	return rc;
}

/* Reads a whole file; files larger than max are refused with -EFBIG (nothing in a store is). */
static int slurp(const char *path, size_t max, unsigned char **out, size_t *lenp)
{
	*out = NULL;
	*lenp = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) != 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	if ((uintmax_t)st.st_size > max) {
		close(fd);
		return -EFBIG;
	}
	size_t cap = (size_t)st.st_size + 1, len = 0;
	unsigned char *buf = xmalloc(cap);
	for (;;) {
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			free(buf);
			close(fd);
			return -e;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == cap) {
			/* the file grew while we read it: fine, up to max */
			if (cap > max) {
				free(buf);
				close(fd);
				return -EFBIG;
			}
			cap *= 2;
			unsigned char *nb = realloc(buf, cap);
			if (!nb)
				die("out of memory");
			buf = nb;
		}
	}
	close(fd);
	*out = buf;
	*lenp = len;
	return 0;
}

static int copy_file(const char *src, const char *dst)
{
	unsigned char *buf;
	size_t len;
	int rc = slurp(src, SIZE_MAX / 4, &buf, &len);
	if (rc < 0)
		return rc;
	rc = write_new_file(dst, buf, len);
	free(buf);
	return rc;
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

/* ---- shared SQLite helpers ------------------------------------------------------------------ */

/* Runs sql expected to yield one integer row; returns an SQLite code (SQLITE_EMPTY: no row). */
static int query_i64(sqlite3 *db, const char *sql, int64_t *out)
{
	sqlite3_stmt *st;
	*out = 0;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(st, 0);
		rc = SQLITE_OK;
	} else if (rc == SQLITE_DONE) {
		rc = SQLITE_EMPTY;
	}
	sqlite3_finalize(st);
	return rc;
}

static sqlite3_stmt *prepare_or_die(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		die("%s: cannot prepare \"%s\": %s", sqlite3_db_filename(db, "main"), sql,
		    sqlite3_errmsg(db));
	return st;
}

static void exec_or_die(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
		die("%s: %s: %s", sqlite3_db_filename(db, "main"), sql, err ? err : "?");
}

static sqlite3 *open_or_die(const char *path, int flags)
{
	sqlite3 *db;
	int rc = sqlite3_open_v2(path, &db, flags, NULL);
	if (rc != SQLITE_OK)
		die("%s: cannot open: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
	return db;
}

static void journal_mode_or_die(sqlite3 *db, const char *path, const char *want)
{
	sqlite3_stmt *st = prepare_or_die(db, "PRAGMA journal_mode");
	if (sqlite3_step(st) != SQLITE_ROW)
		die("%s: PRAGMA journal_mode: %s", path, sqlite3_errmsg(db));
	const char *mode = (const char *)sqlite3_column_text(st, 0);
	if (!mode || strcmp(mode, want) != 0)
		die("%s: journal_mode is %s, expected %s (not a torture store?)", path,
		    mode ? mode : "?", want);
	sqlite3_finalize(st);
}

/* ---- init ----------------------------------------------------------------------------------- */

static int cmd_init(const char *store)
{
	char path[PATH_MAX];

	if (mkdir(store, 0777) != 0) {
		if (errno != EEXIST)
			die("%s: cannot create: %s", store, strerror(errno));
		DIR *d = opendir(store);
		if (!d)
			die("%s: %s", store, strerror(errno));
		struct dirent *de;
		while ((de = readdir(d)))
			if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
				die("%s: not empty; init creates a fresh store", store);
		closedir(d);
	}

	mkpath(path, sizeof path, "%s/" CHROMA_DB, store);
	sqlite3 *db = open_or_die(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
	exec_or_die(db, "PRAGMA journal_mode=DELETE;"
			"BEGIN;"
			"CREATE TABLE counter(id INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
			"INSERT INTO counter(id, n) VALUES(1, 0);"
			"CREATE TABLE embeddings_queue(seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);"
			"CREATE TABLE max_seq_id(segment TEXT PRIMARY KEY, seq INTEGER NOT NULL,"
			" checksum TEXT NOT NULL);"
			"COMMIT;");
	sqlite3_close(db);

	mkpath(path, sizeof path, "%s/" WAL_DB, store);
	db = open_or_die(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
	exec_or_die(db, "PRAGMA journal_mode=WAL;");
	journal_mode_or_die(db, path, "wal");
	exec_or_die(db, "BEGIN;"
			"CREATE TABLE counter(id INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
			"INSERT INTO counter(id, n) VALUES(1, 0);"
			"CREATE TABLE log(k INTEGER PRIMARY KEY, v BLOB NOT NULL);"
			"COMMIT;");
	/* the last close checkpoints and removes -wal, so init leaves a store with nothing pending */
	sqlite3_close(db);

	/* Persist 0 exists from the start, as if the segment had been created empty. */
	mkpath(path, sizeof path, "%s/" SEG_DIR, store);
	if (mkdir(path, 0777) != 0)
		die("%s: %s", path, strerror(errno));
	unsigned char *buf = xmalloc(SEG_MAX_LEN);
	for (int f = 0; f < SEG_COUNT; f++) {
		seg_fill(buf, f, 0);
		mkpath(path, sizeof path, "%s/" SEG_DIR "/%s", store, seg_names[f]);
		int rc = write_new_file(path, buf, seg_len(f, 0));
		if (rc < 0)
			die("%s: %s", path, strerror(-rc));
	}

	mkpath(path, sizeof path, "%s/static", store);
	if (mkdir(path, 0777) != 0)
		die("%s: %s", path, strerror(errno));
	mkpath(path, sizeof path, "%s/static/deep", store);
	if (mkdir(path, 0777) != 0)
		die("%s: %s", path, strerror(errno));
	static_b_fill(buf);
	static const struct {
		const char *rel;
		const void *data;
		size_t len;
	} statics[] = {
		{ STATIC_A, STATIC_A_TEXT, sizeof STATIC_A_TEXT - 1 },
		{ STATIC_B, NULL, STATIC_B_LEN },
		{ STATIC_EMPTY, "", 0 },
	};
	for (size_t i = 0; i < sizeof statics / sizeof statics[0]; i++) {
		mkpath(path, sizeof path, "%s/%s", store, statics[i].rel);
		int rc = write_new_file(path, statics[i].data ? statics[i].data : buf, statics[i].len);
		if (rc < 0)
			die("%s: %s", path, strerror(-rc));
	}
	free(buf);
	printf("torture: initialised store %s\n", store);
	return 0;
}

/* ---- write ---------------------------------------------------------------------------------- */

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
}

struct writer {
	const char *store;
	sqlite3 *chroma, *wal;
	sqlite3_stmt *queue_ins, *chroma_bump, *maxseq_set, *wal_bump, *log_ins;
	int seg_fd[SEG_COUNT];
	unsigned char *segbuf[SEG_COUNT];
	unsigned char payload[QUEUE_PAYLOAD];
	uint64_t records, persists, commits, busy_retries;
};

static bool is_busy(int rc)
{
	return (rc & 0xff) == SQLITE_BUSY;
}

static void brief_backoff(void)
{
	struct timespec ts = { 0, 1000000 };
	nanosleep(&ts, NULL);
}

/*
 * Commits the already-bound statements as one transaction.  busy_timeout makes SQLite wait for
 * readers, but a few paths still answer SQLITE_BUSY at once (a refused lock upgrade, a stale WAL
 * snapshot); retrying the whole transaction is then safe because none of it was committed.  Any
 * other error means the store or the test is broken, so it is fatal.  Returns false only when a
 * stop was requested while the transaction could not go through (nothing was committed then).
 */
static bool run_txn(struct writer *w, sqlite3 *db, sqlite3_stmt **st, int n)
{
	for (;;) {
		int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		if (rc == SQLITE_OK) {
			int i;
			for (i = 0; i < n; i++) {
				rc = sqlite3_step(st[i]);
				sqlite3_reset(st[i]);
				if (rc != SQLITE_DONE)
					break;
			}
			if (i == n) {
				/* a busy COMMIT leaves the transaction open: just commit again */
				while (is_busy(rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL))) {
					w->busy_retries++;
					brief_backoff();
				}
				if (rc == SQLITE_OK) {
					w->commits++;
					return true;
				}
			}
			if (!is_busy(rc))
				die("%s: %s", sqlite3_db_filename(db, "main"), sqlite3_errmsg(db));
			if (!sqlite3_get_autocommit(db))
				sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		} else if (!is_busy(rc)) {
			die("%s: BEGIN: %s", sqlite3_db_filename(db, "main"), sqlite3_errmsg(db));
		}
		w->busy_retries++;
		if (stop_requested)
			return false;
		brief_backoff();
	}
}

static sqlite3 *writer_open(const char *store, const char *name, const char *mode)
{
	char path[PATH_MAX];
	mkpath(path, sizeof path, "%s/%s", store, name);
	sqlite3 *db = open_or_die(path, SQLITE_OPEN_READWRITE);
	/* ChromaDB waits 1000 s for locks: a reader holding one for a while must never fail us. */
	sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
	exec_or_die(db, "PRAGMA synchronous=NORMAL");
	journal_mode_or_die(db, path, mode);
	return db;
}

static int64_t writer_query(sqlite3 *db, const char *sql)
{
	int64_t v = 0;
	int rc = query_i64(db, sql, &v);
	if (rc != SQLITE_OK)
		die("%s: %s: %s", sqlite3_db_filename(db, "main"), sql,
		    rc == SQLITE_EMPTY ? "no row (not a torture store?)" : sqlite3_errmsg(db));
	return v;
}

static bool commit_wal(struct writer *w, uint64_t r)
{
	unsigned char blob[LOG_PAYLOAD];
	payload_fill(blob, sizeof blob, r);
	sqlite3_bind_int64(w->wal_bump, 1, (sqlite3_int64)r);
	sqlite3_bind_int64(w->log_ins, 1, (sqlite3_int64)r);
	sqlite3_bind_blob(w->log_ins, 2, blob, sizeof blob, SQLITE_TRANSIENT);
	sqlite3_stmt *st[] = { w->wal_bump, w->log_ins };
	return run_txn(w, w->wal, st, 2);
}

/*
 * In place through the descriptors opened at start, in ChromaDB's order, no fsync, no rename.
 * All contents are built first so the writes come in one burst, as from ChromaDB's in-memory
 * index: generating between files would open quiet gaps mid-persist that no real writer has.
 */
static bool persist(struct writer *w, uint64_t seq)
{
	uint64_t sums[SEG_COUNT];
	for (int f = 0; f < SEG_COUNT; f++)
		sums[f] = seg_fill(w->segbuf[f], f, seq);
	for (int f = 0; f < SEG_COUNT; f++) {
		if (f == SEG_META && ftruncate(w->seg_fd[f], 0) != 0)
			die("%s/" SEG_DIR "/%s: ftruncate: %s", w->store, seg_names[f], strerror(errno));
		int rc = write_chunked(w->seg_fd[f], w->segbuf[f], seg_len(f, seq));
		if (rc < 0)
			die("%s/" SEG_DIR "/%s: write: %s", w->store, seg_names[f], strerror(-rc));
	}
	w->persists++;
	char digest[17];
	seg_digest_text(seq, sums, digest);
	sqlite3_bind_int64(w->maxseq_set, 1, (sqlite3_int64)seq);
	sqlite3_bind_text(w->maxseq_set, 2, digest, -1, SQLITE_TRANSIENT);
	return run_txn(w, w->chroma, &w->maxseq_set, 1);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmd_write(const char *store, double seconds, long threshold, double interval)
{
	struct writer w = { .store = store };
	char path[PATH_MAX];

	struct sigaction sa = { .sa_handler = on_stop, .sa_flags = SA_RESTART };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	w.chroma = writer_open(store, CHROMA_DB, "delete");
	w.wal = writer_open(store, WAL_DB, "wal");
	for (int f = 0; f < SEG_COUNT; f++) {
		mkpath(path, sizeof path, "%s/" SEG_DIR "/%s", store, seg_names[f]);
		w.seg_fd[f] = open(path, O_WRONLY | O_CLOEXEC);
		if (w.seg_fd[f] < 0)
			die("%s: %s (run \"torture init\" first)", path, strerror(errno));
	}
	for (int f = 0; f < SEG_COUNT; f++)
		w.segbuf[f] = xmalloc(seg_max_len(f));
	w.queue_ins = prepare_or_die(w.chroma,
				     "INSERT INTO embeddings_queue(seq, payload) VALUES(?1, ?2)");
	w.chroma_bump = prepare_or_die(w.chroma, "UPDATE counter SET n = ?1 WHERE id = 1");
	w.maxseq_set = prepare_or_die(w.chroma,
				      "INSERT OR REPLACE INTO max_seq_id(segment, seq, checksum)"
				      " VALUES('" SEG_DIR "', ?1, ?2)");
	w.wal_bump = prepare_or_die(w.wal, "UPDATE counter SET n = ?1 WHERE id = 1");
	w.log_ins = prepare_or_die(w.wal, "INSERT INTO log(k, v) VALUES(?1, ?2)");

	/* Resume where a previous run stopped, completing its half-done record if it was killed. */
	int64_t n = writer_query(w.chroma, "SELECT n FROM counter WHERE id = 1");
	int64_t q = writer_query(w.chroma, "SELECT coalesce(max(seq), 0) FROM embeddings_queue");
	int64_t nw = writer_query(w.wal, "SELECT n FROM counter WHERE id = 1");
	if (n != q)
		die("%s: counter.n=%" PRId64 " but newest embeddings_queue seq is %" PRId64
		    ": store is inconsistent", store, n, q);
	if (n - nw == 1)
		commit_wal(&w, (uint64_t)n);
	else if (n != nw)
		die("%s: counters differ by %" PRId64 ": store is inconsistent", store, n - nw);

	double start = now_s(), deadline = seconds > 0 ? start + seconds : 0, persisted = 0;
	uint64_t r = (uint64_t)n;
	while (!stop_requested && !(deadline > 0 && now_s() >= deadline)) {
		/* The record and its counter bump are one chroma transaction; the WAL counter follows in
		 * its own commit, so at every instant n_rollback - n_wal is 0 or 1. */
		payload_fill(w.payload, sizeof w.payload, r + 1);
		sqlite3_bind_int64(w.queue_ins, 1, (sqlite3_int64)(r + 1));
		sqlite3_bind_blob(w.queue_ins, 2, w.payload, sizeof w.payload, SQLITE_STATIC);
		sqlite3_bind_int64(w.chroma_bump, 1, (sqlite3_int64)(r + 1));
		sqlite3_stmt *st[] = { w.queue_ins, w.chroma_bump };
		if (!run_txn(&w, w.chroma, st, 2))
			break;
		r++;
		w.records++;
		if (!commit_wal(&w, r))
			break;
		/* ChromaDB persists every sync_threshold records; with --persist-interval no sooner
		 * than that after the last persist, as a writer whose records come at a real rate. */
		if (r % (uint64_t)threshold == 0 && now_s() - persisted >= interval) {
			if (!persist(&w, r))
				break;
			persisted = now_s();
		}
	}
	double elapsed = now_s() - start;

	sqlite3_finalize(w.queue_ins);
	sqlite3_finalize(w.chroma_bump);
	sqlite3_finalize(w.maxseq_set);
	sqlite3_finalize(w.wal_bump);
	sqlite3_finalize(w.log_ins);
	if (sqlite3_close(w.chroma) != SQLITE_OK || sqlite3_close(w.wal) != SQLITE_OK)
		die("%s: cannot close databases", store);
	for (int f = 0; f < SEG_COUNT; f++)
		if (close(w.seg_fd[f]) != 0)
			die("%s/" SEG_DIR "/%s: close: %s", store, seg_names[f], strerror(errno));
	for (int f = 0; f < SEG_COUNT; f++)
		free(w.segbuf[f]);

	printf("torture: %" PRIu64 " records, %" PRIu64 " persists, %" PRIu64 " commits\n",
	       w.records, w.persists, w.commits);
	if (elapsed > 0)
		fprintf(stderr, "torture: %.1f s, %.0f records/s, %.1f persists/s, %" PRIu64
			" busy retries\n", elapsed, w.records / elapsed, w.persists / elapsed,
			w.busy_retries);
	return 0;
}

/* ---- checking ------------------------------------------------------------------------------- */

struct check {
	const char *dir;
	char tmp[PATH_MAX];	/* private copies live here, removed at the end */
	bool strict;
	int violations;
};

static void violation(struct check *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void violation(struct check *c, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	/* one line per violation, even when SQLite's message spans several */
	for (char *p = line; *p; p++)
		if (*p == '\n')
			*p = ' ';
	puts(line);
	c->violations++;
}

static void check_begin(struct check *c, const char *dir, bool strict)
{
	fatal_status = 3;
	c->dir = dir;
	c->strict = strict;
	c->violations = 0;
	const char *t = getenv("TMPDIR");
	mkpath(c->tmp, sizeof c->tmp, "%s/torture-check.XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(c->tmp))
		die("cannot create a private directory %s: %s", c->tmp, strerror(errno));
}

static void check_end(struct check *c)
{
	/* flat directory: our copies and whatever SQLite created beside them */
	DIR *d = opendir(c->tmp);
	if (d) {
		struct dirent *de;
		while ((de = readdir(d)))
			if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
				unlinkat(dirfd(d), de->d_name, 0);
		closedir(d);
	}
	if (rmdir(c->tmp) != 0)
		fprintf(stderr, "torture: warning: cannot remove %s: %s\n", c->tmp, strerror(errno));
}

/*
 * Copies DIR/name plus the sidecars SQLite would honour when opening it (rollback journal, WAL;
 * never -shm, which SQLite rebuilds) into the private directory and opens the copy.  The copy is
 * opened read-write on purpose: a copy that caught a hot journal must be judged by what an
 * application sees after SQLite rolls it back, which needs a writable connection; DIR itself is
 * never opened, and query_only stops anything else from being written.
 */
static sqlite3 *open_private(struct check *c, const char *name)
{
	static const char *const sidecars[] = { "", "-journal", "-wal" };
	char src[PATH_MAX], dst[PATH_MAX];

	mkpath(src, sizeof src, "%s/%s", c->dir, name);
	if (!exists(src)) {
		violation(c, "%s: missing", name);
		return NULL;
	}
	for (size_t i = 0; i < sizeof sidecars / sizeof sidecars[0]; i++) {
		mkpath(src, sizeof src, "%s/%s%s", c->dir, name, sidecars[i]);
		mkpath(dst, sizeof dst, "%s/%s%s", c->tmp, name, sidecars[i]);
		if (i > 0 && !exists(src))
			continue;
		int rc = copy_file(src, dst);
		if (rc < 0) {
			violation(c, "%s%s: cannot read: %s", name, sidecars[i], strerror(-rc));
			return NULL;
		}
	}
	mkpath(dst, sizeof dst, "%s/%s", c->tmp, name);
	sqlite3 *db = NULL;
	int rc = sqlite3_open_v2(dst, &db, SQLITE_OPEN_READWRITE, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, "PRAGMA query_only=1", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		violation(c, "%s: cannot open: %s", name, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		sqlite3_close(db);
		return NULL;
	}
	sqlite3_busy_timeout(db, 5000);
	return db;
}

static bool integrity_ok(struct check *c, sqlite3 *db, const char *name)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, "PRAGMA integrity_check(5)", -1, &st, NULL) != SQLITE_OK) {
		violation(c, "%s: integrity_check: %s", name, sqlite3_errmsg(db));
		return false;
	}
	char msg[1024] = "";
	size_t used = 0;
	int rc, rows = 0;
	bool ok = false;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *t = (const char *)sqlite3_column_text(st, 0);
		if (!t)
			t = "?";
		if (rows++ == 0 && strcmp(t, "ok") == 0)
			ok = true;
		else
			ok = false;
		if (used < sizeof msg)
			used += (size_t)snprintf(msg + used, sizeof msg - used, "%s%s",
						 rows > 1 ? "; " : "", t);
	}
	if (rc != SQLITE_DONE) {
		violation(c, "%s: integrity_check: %s", name, sqlite3_errmsg(db));
		ok = false;
	} else if (!ok) {
		violation(c, "%s: integrity_check: %s", name, msg);
	}
	sqlite3_finalize(st);
	return ok;
}

static bool check_i64(struct check *c, sqlite3 *db, const char *name, const char *sql, int64_t *out)
{
	int rc = query_i64(db, sql, out);
	if (rc == SQLITE_OK)
		return true;
	violation(c, "%s: %s: %s", name, sql, rc == SQLITE_EMPTY ? "no row" : sqlite3_errmsg(db));
	return false;
}

/* Everything the checker learnt; the has_* flags say which values are trustworthy. */
struct facts {
	bool has_nr, has_nw, has_q, has_p, has_s;
	int64_t nr, nw, q, p;
	uint64_t s;
	char p_checksum[64];
	bool has_p_checksum;
};

static void check_chroma(struct check *c, struct facts *fx)
{
	sqlite3 *db = open_private(c, CHROMA_DB);
	if (!db)
		return;
	if (!integrity_ok(c, db, CHROMA_DB))
		goto out;
	int64_t rows, count;
	if (check_i64(c, db, CHROMA_DB, "SELECT count(*) FROM counter", &rows) && rows != 1)
		violation(c, CHROMA_DB ": counter has %" PRId64 " rows, expected 1", rows);
	fx->has_nr = check_i64(c, db, CHROMA_DB, "SELECT n FROM counter WHERE id = 1", &fx->nr);
	fx->has_q = check_i64(c, db, CHROMA_DB,
			      "SELECT coalesce(max(seq), 0) FROM embeddings_queue", &fx->q);
	if (fx->has_q && check_i64(c, db, CHROMA_DB, "SELECT count(*) FROM embeddings_queue", &count)
	    && count != fx->q)
		violation(c, CHROMA_DB ": embeddings_queue holds %" PRId64 " rows but its newest seq is %"
			  PRId64 " (records are numbered 1, 2, ...)", count, fx->q);
	if (fx->has_nr && fx->has_q && fx->nr != fx->q)
		violation(c, CHROMA_DB ": counter.n=%" PRId64 " but newest embeddings_queue seq is %"
			  PRId64 " (both are written by one transaction)", fx->nr, fx->q);

	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, "SELECT seq, checksum FROM max_seq_id WHERE segment = '" SEG_DIR "'",
			       -1, &st, NULL) != SQLITE_OK) {
		violation(c, CHROMA_DB ": max_seq_id: %s", sqlite3_errmsg(db));
		goto out;
	}
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		fx->p = sqlite3_column_int64(st, 0);
		const char *sum = (const char *)sqlite3_column_text(st, 1);
		snprintf(fx->p_checksum, sizeof fx->p_checksum, "%s", sum ? sum : "");
		fx->has_p = fx->has_p_checksum = true;
	} else if (rc == SQLITE_DONE) {
		fx->p = 0;	/* no persist recorded yet */
		fx->has_p = true;
	} else {
		violation(c, CHROMA_DB ": max_seq_id: %s", sqlite3_errmsg(db));
	}
	sqlite3_finalize(st);
out:
	sqlite3_close(db);
}

static void check_wal(struct check *c, struct facts *fx)
{
	sqlite3 *db = open_private(c, WAL_DB);
	if (!db)
		return;
	if (!integrity_ok(c, db, WAL_DB))
		goto out;
	int64_t rows, maxk, count;
	if (check_i64(c, db, WAL_DB, "SELECT count(*) FROM counter", &rows) && rows != 1)
		violation(c, WAL_DB ": counter has %" PRId64 " rows, expected 1", rows);
	fx->has_nw = check_i64(c, db, WAL_DB, "SELECT n FROM counter WHERE id = 1", &fx->nw);
	if (check_i64(c, db, WAL_DB, "SELECT coalesce(max(k), 0) FROM log", &maxk) &&
	    check_i64(c, db, WAL_DB, "SELECT count(*) FROM log", &count) && fx->has_nw &&
	    (maxk != fx->nw || count != fx->nw))
		violation(c, WAL_DB ": counter.n=%" PRId64 " but log holds %" PRId64
			  " rows up to k=%" PRId64 " (both are written by one transaction)",
			  fx->nw, count, maxk);
out:
	sqlite3_close(db);
}

/* Collects up to cap distinct block stamps, so a torn-file message can name the persists mixed. */
static void note_stamp(uint64_t *seen, int *nseen, int cap, uint64_t v)
{
	for (int i = 0; i < *nseen; i++)
		if (seen[i] == v)
			return;
	if (*nseen < cap)
		seen[(*nseen)++] = v;
}

/* Validates one segment file on its own; on success *seq is the persist it comes from. */
static bool check_seg_file(struct check *c, int f, uint64_t *seq)
{
	char path[PATH_MAX];
	const char *name = seg_names[f];
	mkpath(path, sizeof path, "%s/" SEG_DIR "/%s", c->dir, name);
	unsigned char *buf;
	size_t len;
	int rc = slurp(path, 4 * (size_t)SEG_MAX_LEN, &buf, &len);
	if (rc < 0) {
		violation(c, SEG_DIR "/%s: %s", name, rc == -ENOENT ? "missing" : strerror(-rc));
		return false;
	}
	bool ok = false;
	if (len < SEG_HDR_LEN) {
		violation(c, SEG_DIR "/%s: short: %zu bytes, not even a header (copied mid-rewrite?)",
			  name, len);
		goto out;
	}
	if (memcmp(buf, SEG_MAGIC, 8) != 0 || get64(buf + 56) != hash_bytes(buf, 56)) {
		violation(c, SEG_DIR "/%s: header is damaged (bad magic or header checksum)", name);
		goto out;
	}
	if (get64(buf + 8) != (uint64_t)f) {
		violation(c, SEG_DIR "/%s: header belongs to %s", name,
			  get64(buf + 8) < SEG_COUNT ? seg_names[get64(buf + 8)] : "an unknown file");
		goto out;
	}
	uint64_t s = get64(buf + 16), want_len = get64(buf + 24);
	if (want_len != seg_len(f, s)) {
		violation(c, SEG_DIR "/%s: header says %" PRIu64 " bytes, persist %" PRIu64
			  " writes %zu", name, want_len, s, seg_len(f, s));
		goto out;
	}
	if (len != want_len) {
		violation(c, SEG_DIR "/%s: torn: %zu bytes but persist %" PRIu64 " wrote %" PRIu64,
			  name, len, s, want_len);
		goto out;
	}
	if (hash_bytes(buf + SEG_HDR_LEN, len - SEG_HDR_LEN) != get64(buf + 32)) {
		uint64_t seen[4];
		int nseen = 0;
		note_stamp(seen, &nseen, 4, s);
		for (size_t off = SEG_BLOCK; off + 8 <= len; off += SEG_BLOCK)
			note_stamp(seen, &nseen, 4, get64(buf + off));
		char list[128] = "";
		size_t used = 0;
		for (int i = 0; i < nseen && used < sizeof list; i++)
			used += (size_t)snprintf(list + used, sizeof list - used, "%s%" PRIu64,
						 i ? ", " : "", seen[i]);
		violation(c, SEG_DIR "/%s: torn: content checksum mismatch, header from persist %"
			  PRIu64 ", blocks stamped %s", name, s, list);
		goto out;
	}
	*seq = s;
	ok = true;
out:
	free(buf);
	return ok;
}

static void check_segment(struct check *c, struct facts *fx)
{
	uint64_t seq[SEG_COUNT];
	bool all = true;
	for (int f = 0; f < SEG_COUNT; f++)
		all &= check_seg_file(c, f, &seq[f]);
	if (!all)
		return;
	for (int f = 1; f < SEG_COUNT; f++) {
		if (seq[f] != seq[0]) {
			char list[512];
			size_t used = 0;
			for (int g = 0; g < SEG_COUNT; g++)
				used += (size_t)snprintf(list + used, sizeof list - used, "%s%s=%" PRIu64,
							 g ? " " : "", seg_names[g], seq[g]);
			violation(c, SEG_DIR ": files come from different persists: %s", list);
			return;
		}
	}
	fx->s = seq[0];
	fx->has_s = true;
}

static void check_static(struct check *c)
{
	unsigned char *want = xmalloc(STATIC_B_LEN);
	static_b_fill(want);
	const struct {
		const char *rel;
		const void *data;
		size_t len;
	} statics[] = {
		{ STATIC_A, STATIC_A_TEXT, sizeof STATIC_A_TEXT - 1 },
		{ STATIC_B, want, STATIC_B_LEN },
		{ STATIC_EMPTY, "", 0 },
	};
	for (size_t i = 0; i < sizeof statics / sizeof statics[0]; i++) {
		char path[PATH_MAX];
		mkpath(path, sizeof path, "%s/%s", c->dir, statics[i].rel);
		unsigned char *buf;
		size_t len;
		int rc = slurp(path, 4 * STATIC_B_LEN, &buf, &len);
		if (rc < 0) {
			violation(c, "%s: %s", statics[i].rel, rc == -ENOENT ? "missing" : strerror(-rc));
			continue;
		}
		if (len != statics[i].len || (len > 0 && memcmp(buf, statics[i].data, len) != 0))
			violation(c, "%s: content differs from what init wrote (%zu bytes, expected %zu)",
				  statics[i].rel, len, statics[i].len);
		free(buf);
	}
	free(want);
}

/* The cross-file invariants: one instant for both databases, and ChromaDB's persist rule. */
static void check_cross(struct check *c, const struct facts *fx)
{
	if (fx->has_nr && fx->has_nw && (fx->nr - fx->nw < 0 || fx->nr - fx->nw > 1))
		violation(c, "counters: " CHROMA_DB " n=%" PRId64 ", " WAL_DB " n=%" PRId64
			  ": difference %" PRId64 ", a single instant has 0 or 1 (databases copied at"
			  " different times)", fx->nr, fx->nw, fx->nr - fx->nw);
	if (fx->has_p && fx->has_s && (uint64_t)fx->p > fx->s)
		violation(c, "persist: max_seq_id.seq=%" PRId64 " is newer than the segment files"
			  " (persist %" PRIu64 "): database copied after the files", fx->p, fx->s);
	if (fx->has_q && fx->has_s && fx->s > (uint64_t)fx->q)
		violation(c, "persist: segment files come from persist %" PRIu64 " but the newest"
			  " embeddings_queue seq is %" PRId64 ": files copied after the database",
			  fx->s, fx->q);
	if (fx->has_p_checksum && fx->p >= 0) {
		unsigned char *scratch = xmalloc(SEG_MAX_LEN);
		char want[17];
		seg_digest_for((uint64_t)fx->p, scratch, want);
		free(scratch);
		if (strcmp(want, fx->p_checksum) != 0)
			violation(c, CHROMA_DB ": max_seq_id.checksum=%s does not match persist %" PRId64
				  " (expected %s)", fx->p_checksum, fx->p, want);
	}
}

/* SQLite URIs need '%', '?' and '#' (and anything unusual) percent-encoded. */
static void uri_for(char *out, size_t size, const char *path, const char *query)
{
	size_t o = 0;
	o += (size_t)snprintf(out, size, "file:");
	for (const unsigned char *p = (const unsigned char *)path; *p && o + 4 < size; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		    strchr("/._-~", *p))
			out[o++] = (char)*p;
		else
			o += (size_t)snprintf(out + o, size - o, "%%%02X", *p);
	}
	out[o] = '\0';
	if (o + strlen(query) + 1 >= size)
		die("path too long: %s", path);
	strcat(out, query);
}

static const char *const sidecar_suffixes[] = { "-wal", "-shm", "-journal" };

static void sidecar_violation(struct check *c, const char *rel)
{
	violation(c, "%s: SQLite sidecar present (a snapshot database must be self-contained)", rel);
}

/* Snapshot-format rules for one database file inside DIR (rel is relative to DIR); sidecars are
 * looked for here unless the caller walks the whole tree and meets them anyway. */
static void strict_db(struct check *c, const char *rel, bool look_for_sidecars)
{
	char path[PATH_MAX], side[PATH_MAX];
	mkpath(path, sizeof path, "%s/%s", c->dir, rel);
	for (size_t i = 0; look_for_sidecars && i < 3; i++) {
		mkpath(side, sizeof side, "%s%s", path, sidecar_suffixes[i]);
		if (exists(side)) {
			mkpath(side, sizeof side, "%s%s", rel, sidecar_suffixes[i]);
			sidecar_violation(c, side);
		}
	}
	unsigned char hdr[100];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : pread(fd, hdr, sizeof hdr, 0);
	if (fd >= 0)
		close(fd);
	if (n != (ssize_t)sizeof hdr || memcmp(hdr, "SQLite format 3", 16) != 0) {
		violation(c, "%s: not an SQLite database (%s)", rel,
			  n < 0 ? strerror(errno) : "bad header");
		return;
	}
	if (hdr[18] != 1 || hdr[19] != 1)
		violation(c, "%s: header bytes 18-19 are %d,%d, a rollback-journal database has 1,1"
			  " (still in WAL format?)", rel, hdr[18], hdr[19]);

	/* immutable=1: no locks, no journal lookup, no writes, as on read-only media */
	char uri[3 * PATH_MAX + 32];
	uri_for(uri, sizeof uri, path, "?immutable=1");
	sqlite3 *db = NULL;
	int rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
	if (rc != SQLITE_OK) {
		violation(c, "%s: cannot open with immutable=1: %s", rel,
			  db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
	} else {
		char label[PATH_MAX + 32];
		snprintf(label, sizeof label, "%s (immutable)", rel);
		integrity_ok(c, db, label);
	}
	sqlite3_close(db);
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n > m && strcmp(s + n - m, suffix) == 0;
}

/* Finds every database in the tree (by its magic) and every journal/WAL/shm sidecar. */
static void strict_walk(struct check *c, const char *rel)
{
	char path[PATH_MAX];
	mkpath(path, sizeof path, "%s%s%s", c->dir, *rel ? "/" : "", rel);
	DIR *d = opendir(path);
	if (!d) {
		violation(c, "%s: cannot list: %s", *rel ? rel : c->dir, strerror(errno));
		return;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		char sub[PATH_MAX], full[PATH_MAX];
		mkpath(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", de->d_name);
		mkpath(full, sizeof full, "%s/%s", c->dir, sub);
		struct stat st;
		if (lstat(full, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			strict_walk(c, sub);
			continue;
		}
		if (!S_ISREG(st.st_mode))
			continue;
		/* even a stray sidecar whose database is gone means the copy is not self-contained */
		bool sidecar = false;
		for (size_t i = 0; i < 3; i++)
			sidecar |= has_suffix(de->d_name, sidecar_suffixes[i]);
		if (sidecar) {
			sidecar_violation(c, sub);
			continue;
		}
		unsigned char magic[16];
		int fd = open(full, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = pread(fd, magic, sizeof magic, 0);
		close(fd);
		if (n == (ssize_t)sizeof magic && memcmp(magic, "SQLite format 3", 16) == 0)
			strict_db(c, sub, false);
	}
	closedir(d);
}

static int cmd_check(const char *dir, bool strict)
{
	struct check c;
	struct facts fx = { 0 };
	struct stat st;

	errno = 0;
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		printf("%s: %s\n", dir, errno == 0 ? "not a directory" : strerror(errno));
		return 1;
	}
	check_begin(&c, dir, strict);
	check_chroma(&c, &fx);
	check_wal(&c, &fx);
	check_segment(&c, &fx);
	check_static(&c);
	check_cross(&c, &fx);
	if (strict)
		strict_walk(&c, "");
	check_end(&c);
	if (c.violations)
		return 1;
	printf("consistent: counter=%" PRId64 " persist=%" PRIu64 "\n", fx.nr, fx.s);
	return 0;
}

/* ---- hot journal ---------------------------------------------------------------------------- */

static const unsigned char journal_magic[8] = { 0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7 };

/* In the child: dirty every page with a cache far too small to hold them, so SQLite must spill
 * (journal written and synced, then database pages overwritten), and die before COMMIT. */
static void crash_mid_transaction(const char *path) __attribute__((noreturn));
static void crash_mid_transaction(const char *path)
{
	sqlite3 *db;
	char *err = NULL;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
	    sqlite3_exec(db, "PRAGMA cache_size=2; PRAGMA cache_spill=ON; BEGIN IMMEDIATE;"
			 "UPDATE hot SET v = 'uncommitted';", NULL, NULL, &err) != SQLITE_OK) {
		fprintf(stderr, "torture: hotjournal child: %s\n", err ? err : sqlite3_errmsg(db));
		_exit(1);
	}
	raise(SIGKILL);
	_exit(1);
}

static size_t count_pages_with(const unsigned char *buf, size_t len, size_t page, const char *s)
{
	size_t hits = 0, n = strlen(s);
	for (size_t off = 0; off < len; off += page) {
		size_t plen = len - off < page ? len - off : page;
		if (memmem(buf + off, plen, s, n))
			hits++;
	}
	return hits;
}

static int cmd_hotjournal(const char *store)
{
	char path[PATH_MAX], jpath[PATH_MAX];
	if (mkdir(store, 0777) != 0 && errno != EEXIST)
		die("%s: %s", store, strerror(errno));
	mkpath(path, sizeof path, "%s/" HOT_DB, store);
	static const char *const sidecars[] = { "", "-journal", "-wal", "-shm" };
	for (size_t i = 0; i < sizeof sidecars / sizeof sidecars[0]; i++) {
		mkpath(jpath, sizeof jpath, "%s%s", path, sidecars[i]);
		if (unlink(jpath) != 0 && errno != ENOENT)
			die("%s: %s", jpath, strerror(errno));
	}
	mkpath(jpath, sizeof jpath, "%s-journal", path);

	sqlite3 *db = open_or_die(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
	exec_or_die(db, "PRAGMA journal_mode=DELETE; BEGIN;"
			"CREATE TABLE hot(id INTEGER PRIMARY KEY, v TEXT NOT NULL, pad BLOB NOT NULL);"
			"INSERT INTO hot(id, v, pad) WITH RECURSIVE i(x) AS"
			" (SELECT 1 UNION ALL SELECT x + 1 FROM i WHERE x < 2000)"
			" SELECT x, 'committed', zeroblob(200) FROM i;"
			"COMMIT;");
	/* closed before the fork: no descriptor (and so no lock) of ours outlives into the child */
	sqlite3_close(db);

	unsigned char *before, *after;
	size_t before_len, after_len;
	int rc = slurp(path, SIZE_MAX / 4, &before, &before_len);
	if (rc < 0)
		die("%s: %s", path, strerror(-rc));

	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0)
		crash_mid_transaction(path);
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			die("waitpid: %s", strerror(errno));
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
		die("hotjournal: the child did not die mid-transaction (status %#x)", status);

	/* Read everything raw: opening hot.sqlite3 with SQLite now would roll the journal back. */
	unsigned char jhdr[8];
	struct stat st;
	int fd = open(jpath, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0 || pread(fd, jhdr, 8, 0) != 8 ||
	    memcmp(jhdr, journal_magic, 8) != 0)
		die("%s: no hot journal was left behind (%s)", jpath,
		    fd < 0 ? strerror(errno) : "missing journal header");
	close(fd);
	rc = slurp(path, SIZE_MAX / 4, &after, &after_len);
	if (rc < 0)
		die("%s: %s", path, strerror(-rc));
	size_t page = ((size_t)before[16] << 8) | before[17];
	if (page == 1)
		page = 65536;
	size_t dirty = count_pages_with(after, after_len, page, "uncommitted");
	if (dirty == 0 || (after_len == before_len && memcmp(before, after, after_len) == 0))
		die("%s: the crashed transaction left no pages in the database file; the journal is"
		    " hot but harmless, which does not test recovery", path);
	printf("torture: %s: %d rows committed as 'committed'; a writer updating them to"
	       " 'uncommitted' was killed before COMMIT, leaving %s (%jd bytes, hot) and %zu of %zu"
	       " database pages holding uncommitted data\n",
	       path, HOT_ROWS, jpath, (intmax_t)st.st_size, dirty, after_len / page);
	free(before);
	free(after);
	return 0;
}

static int cmd_hotcheck(const char *dir, bool strict)
{
	struct check c;
	struct stat st;
	errno = 0;
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		printf("%s: %s\n", dir, errno == 0 ? "not a directory" : strerror(errno));
		return 1;
	}
	check_begin(&c, dir, strict);
	sqlite3 *db = open_private(&c, HOT_DB);
	int64_t total = -1, committed = -1;
	if (db && integrity_ok(&c, db, HOT_DB) &&
	    check_i64(&c, db, HOT_DB, "SELECT count(*) FROM hot", &total) &&
	    check_i64(&c, db, HOT_DB, "SELECT count(*) FROM hot WHERE v = 'committed'", &committed) &&
	    (total != HOT_ROWS || committed != HOT_ROWS))
		violation(&c, HOT_DB ": %" PRId64 " rows, %" PRId64 " of them 'committed'; the committed"
			  " state has %d rows, all 'committed'", total, committed, HOT_ROWS);
	sqlite3_close(db);
	if (strict)
		strict_db(&c, HOT_DB, true);
	check_end(&c);
	if (c.violations)
		return 1;
	printf("consistent: " HOT_DB " holds the committed state (%d rows)\n", HOT_ROWS);
	return 0;
}

/* ---- command line --------------------------------------------------------------------------- */

#define SYNOPSIS \
	"usage: torture init STORE\n" \
	"       torture write STORE [--seconds N] [--sync-threshold K] [--persist-interval MS]\n" \
	"       torture check [--strict] DIR\n" \
	"       torture hotjournal STORE\n" \
	"       torture hotcheck [--strict] DIR\n"

static void usage(FILE *out)
{
	fputs(SYNOPSIS
	      "\n"
	      "init        create a fresh ChromaDB-like store in STORE\n"
	      "write       write to STORE at full speed until SIGTERM/SIGINT or N seconds;\n"
	      "            persist the segment every K records (default 20), and no sooner than\n"
	      "            MS milliseconds after the last persist (default 0)\n"
	      "check       judge a copy of a store: exit 0 if it is one consistent instant,\n"
	      "            1 with one line per violation; --strict also demands the snapshot\n"
	      "            format (no -wal/-shm/-journal, rollback header, opens immutable)\n"
	      "hotjournal  leave STORE/" HOT_DB " as a writer that crashed mid-commit left it\n"
	      "hotcheck    check that DIR/" HOT_DB " holds exactly the committed state\n"
	      "\n"
	      "Exit status: 0 success/consistent, 1 failure/inconsistent, 2 bad usage,\n"
	      "3 the checker itself could not run.\n",
	      out);
}

static void bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void bad_usage(const char *fmt, ...)
{
	va_list ap;
	fputs("torture: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n" SYNOPSIS "(torture --help explains the commands)\n", stderr);
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		bad_usage("missing command");
	const char *cmd = argv[1];
	if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
		usage(stdout);
		return 0;
	}

	static const struct option opts[] = {
		{ "seconds", required_argument, NULL, 's' },
		{ "sync-threshold", required_argument, NULL, 'k' },
		{ "persist-interval", required_argument, NULL, 'i' },
		{ "strict", no_argument, NULL, 'S' },
		{ NULL, 0, NULL, 0 },
	};
	double seconds = 0, interval = 0;
	long threshold = 20;
	bool strict = false, is_write = strcmp(cmd, "write") == 0;
	bool strict_ok = strcmp(cmd, "check") == 0 || strcmp(cmd, "hotcheck") == 0;
	int opt;
	opterr = 0;
	while ((opt = getopt_long(argc - 1, argv + 1, "", opts, NULL)) != -1) {
		char *end;
		switch (opt) {
		case 's':
			if (!is_write)
				bad_usage("%s: --seconds applies to write only", cmd);
			errno = 0;
			seconds = strtod(optarg, &end);
			if (errno || *end || end == optarg || !(seconds > 0))
				bad_usage("--seconds: expected a positive number, got \"%s\"", optarg);
			break;
		case 'k':
			if (!is_write)
				bad_usage("%s: --sync-threshold applies to write only", cmd);
			errno = 0;
			threshold = strtol(optarg, &end, 10);
			if (errno || *end || end == optarg || threshold < 1)
				bad_usage("--sync-threshold: expected a positive integer, got \"%s\"",
					  optarg);
			break;
		case 'i':
			if (!is_write)
				bad_usage("%s: --persist-interval applies to write only", cmd);
			errno = 0;
			interval = strtod(optarg, &end) / 1000;
			if (errno || *end || end == optarg || !(interval >= 0))
				bad_usage("--persist-interval: expected milliseconds, got \"%s\"", optarg);
			break;
		case 'S':
			if (!strict_ok)
				bad_usage("%s: --strict applies to check and hotcheck only", cmd);
			strict = true;
			break;
		default:
			bad_usage("%s: unknown option or missing value: %s", cmd, argv[optind]);
		}
	}
	int nargs = argc - 1 - optind;
	char **args = argv + 1 + optind;
	if (nargs != 1)
		bad_usage("%s: expected exactly one %s argument", cmd,
			  strcmp(cmd, "check") == 0 || strcmp(cmd, "hotcheck") == 0 ? "DIR" : "STORE");

	if (strcmp(cmd, "init") == 0)
		return cmd_init(args[0]);
	if (is_write)
		return cmd_write(args[0], seconds, threshold, interval);
	if (strcmp(cmd, "check") == 0)
		return cmd_check(args[0], strict);
	if (strcmp(cmd, "hotjournal") == 0)
		return cmd_hotjournal(args[0]);
	if (strcmp(cmd, "hotcheck") == 0)
		return cmd_hotcheck(args[0], strict);
	bad_usage("unknown command \"%s\"", cmd);
}
