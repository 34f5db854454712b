/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * adversary: writers that tear a snapshot which only waits for a quiet window, and the checker
 * that judges a copy of the store they write.
 *
 *   adversary run --mode MODE [--stall-ms N] [--burst-ms N] [--idle-ms N] [--on-read] STORE
 *   adversary check --mode MODE COPY
 *
 * The store is a ChromaDB persist directory in miniature: chroma.sqlite3 (rollback journal; its
 * writers wait up to 1000 s for a lock) and a segment folder of five files persisted as one
 * group, in ChromaDB's order (header.bin, data_level0.bin, length.bin, link_lists.bin,
 * index_metadata.pickle), sizes changing from persist to persist.  Every
 * persist writes its sequence number S (and the previous persist's, P) into every file of the
 * group; each file is a pure function of (file, S, P) with a header checksum, a body checksum and
 * S stamped in every 4 KiB block, so a file mixing two persists, cut short or padded is caught on
 * its own, and files from different persists are caught against each other.
 *
 * The writer alternates bursts of persists (--burst-ms) with idle time in which no plain file
 * is written (--idle-ms), so that a capture has quiet moments to cut at, and the moments it
 * must not cut at come often.  With --on-read a burst starts only when some other process opens
 * a file of the group (a backup starting), and the idle time is the cool-down before the next
 * trigger: the adversarial moment then meets every capture instead of a random share of them.
 *
 * After its last file a persist commits max_seq_id = S together with the records the next
 * persist will cover (group-select: max_seq_id alone, the records come from another thread).
 *
 * Modes (one per way a quiet window has been fooled):
 *   group-commit  in place through long-lived descriptors (pwrite in 64 KiB pieces, then
 *                 truncate to the new size; the pickle is truncated first, as ChromaDB does);
 *                 between data_level0.bin and length.bin a commit of a midgroup row: a
 *                 capture's SHARED lock stalls the writer half-way through the group, which
 *                 then looks quiet.
 *   group-select  the same with a plain SELECT there, while another thread commits a record
 *                 every 0.3 ms or so: that thread's commit, waiting on the capture's lock,
 *                 holds PENDING, which blocks the SELECT.
 *   hardlink      the group also holds x.bin, written last, which has two names
 *                 (current/x.bin, archive/x.bin) and is written through current/ only: inotify
 *                 reports the write in current/ alone.  A churning unrelated file
 *                 (churn/noise.bin, written by a thread of its own during bursts) keeps a
 *                 capture settling for more than 2 s.  Use with --on-read.
 *   aio           the group is written with Linux native AIO (io_submit), which raises no
 *                 inotify event; sizes never change, since a truncate would raise one.  With
 *                 the churning file.  Use with --on-read.
 *   stall         in place, stalling --stall-ms between consecutive files of the group.
 *   rename-stall  each file written to NAME.tmp, fsync'd and renamed over NAME, --stall-ms
 *                 between renames.
 *
 * The invariant `check` enforces (one instant T; F = the persist the group files come from,
 * P = the persist before it, as written in F's headers; p = max_seq_id.seq, q = the newest
 * embeddings_queue seq, m = the newest midgroup seq, all in chroma.sqlite3 at its last commit
 * before T, after rolling back any hot journal of the copy):
 *   - every group file is present and whole, and all of them (both names of x.bin too, byte for
 *     byte) come from the same persist F;
 *   - embeddings_queue holds exactly the rows 1..q, and F <= q: a persist covers records that
 *     were committed before it began;
 *   - p == F or p == P: max_seq_id is committed right after the last file of a persist, and the
 *     next persist starts only after that commit;
 *   - group-commit: m == F: the midgroup row of persist F is committed after F's first two
 *     files and before its last three, and that of the next persist after the next persist has
 *     rewritten its first two files;
 *   - the database passes PRAGMA integrity_check.
 * Every state between two writes of the writer satisfies all of these unless a group is half
 * written, so a copy that fails one was not taken at one instant.  Files named *.tmp (a
 * rename-stall persist in progress) and churn/noise.bin are not judged.  `check` prints one
 * line, "consistent: ..." (exit 0) or "torn: ..." with every violation (exit 1); exit 2 is bad
 * usage, 3 a checker that could not run.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/aio_abi.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#define DB_NAME "chroma.sqlite3"
#define SEG_DIR "7d1f0c2e-5a4b-4c8d-9e6f-3b2a1c0d9e8f"
#define CHURN "churn/noise.bin"
#define CHURN_LEN (4u << 20)
#define CHURN_CHUNK (64u * 1024)
#define MAGIC "ADVGRP01"
#define HDR_LEN 64
#define BLOCK 4096
#define CHUNK (64 * 1024)
#define BUSY_TIMEOUT_MS 1000000
#define RECORDS_PER_PERSIST 5
#define MAX_FILES 7
/* The mid-group SQLite access comes after this many files (header.bin, data_level0.bin). */
#define MID_AFTER 2

enum mode { M_COMMIT, M_SELECT, M_HARDLINK, M_AIO, M_STALL, M_RENAME, M_COUNT };
static const char *const mode_names[M_COUNT] = {
	"group-commit", "group-select", "hardlink", "aio", "stall", "rename-stall",
};

/* Group files in persist order; x.bin exists in hardlink mode only, under two names. */
enum { F_HEADER, F_DATA, F_LENGTH, F_LINKS, F_META, F_X, F_XARCHIVE };
static const char *const file_paths[MAX_FILES] = {
	SEG_DIR "/header.bin", SEG_DIR "/data_level0.bin", SEG_DIR "/length.bin",
	SEG_DIR "/link_lists.bin", SEG_DIR "/index_metadata.pickle", "current/x.bin",
	"archive/x.bin",
};

/* In messages: the segment files by their own name, the two names of x.bin in full. */
static const char *display_name(int f)
{
	return f >= F_X ? file_paths[f] : strrchr(file_paths[f], '/') + 1;
}

static int nfiles_written(enum mode m) { return m == M_HARDLINK ? F_X + 1 : F_META + 1; }

/* ---- errors ------------------------------------------------------------------------------- */

/* run fails with 1; a checker that could not run exits 3, never 1, which means "torn". */
static int fatal_status = 1;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	fflush(stdout);
	fputs("adversary: ", stderr);
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

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(double ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)((ms - 1000 * (long)(ms / 1000)) * 1e6) };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ---- content ------------------------------------------------------------------------------ */

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

/* Sizes change from persist to persist (so copies race truncation too), except in aio mode,
 * where shrinking a file takes a truncate, which inotify reports. */
static size_t file_len(enum mode m, int f, uint64_t seq)
{
	unsigned k = m == M_AIO ? 3 : (unsigned)(mix64(seq * 131 + (uint64_t)f) % 4);
	switch (f) {
	case F_HEADER: return 4096;
	case F_DATA: return (1024 + 256 * k) * 1024;
	case F_LENGTH: return 64 * 1024;
	case F_LINKS: return (128 + 64 * k) * 1024;
	case F_META: return 2048 + 8 * (size_t)(m == M_AIO ? 1000 : mix64(seq ^ 0x6d657461u) % 1024);
	default: return (256 + 64 * k) * 1024;
	}
}

#define MAX_LEN ((1024 + 256 * 3) * 1024)

/* Fills buf with file f of persist seq (previous persist prev). Header: magic, file id, seq,
 * prev, length, body checksum, 0, header checksum. */
static void fill(unsigned char *buf, enum mode m, int f, uint64_t seq, uint64_t prev)
{
	size_t len = file_len(m, f, seq);
	uint64_t base = mix64(seq ^ ((uint64_t)(f + 1) << 56));
	for (size_t off = HDR_LEN; off + 8 <= len; off += 8)
		put64(buf + off, off % BLOCK == 0 ? seq : mix64(base + off));
	memset(buf, 0, HDR_LEN);
	memcpy(buf, MAGIC, 8);
	put64(buf + 8, (uint64_t)f);
	put64(buf + 16, seq);
	put64(buf + 24, prev);
	put64(buf + 32, len);
	put64(buf + 40, hash_bytes(buf + HDR_LEN, len - HDR_LEN));
	put64(buf + 56, hash_bytes(buf, 56));
}

/* ---- file helpers ------------------------------------------------------------------------- */

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

/* In CHUNK pieces, as an in-place rewrite of a big buffer does: a reader can see a mix. */
static int write_chunked(int fd, const unsigned char *buf, size_t len)
{
	for (size_t off = 0; off < len; off += CHUNK) {
		int rc = pwrite_all(fd, buf + off, len - off < CHUNK ? len - off : CHUNK, (off_t)off);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int slurp(const char *path, size_t max, unsigned char **out, size_t *lenp)
{
	*out = NULL;
	*lenp = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t cap = 64 * 1024, len = 0;
	unsigned char *buf = xmalloc(cap);
	for (;;) {
		if (len == cap) {
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
	int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		rc = -errno;
	else {
		rc = pwrite_all(fd, buf, len, 0);
		if (close(fd) != 0 && rc == 0)
			rc = -errno;
	}
	free(buf);
	return rc;
}

/* ---- Linux native AIO, by raw system calls (no libaio) ------------------------------------ */

static int aio_write_all(aio_context_t ctx, int fd, const unsigned char *buf, size_t len)
{
	enum { MAX_CBS = MAX_LEN / CHUNK + 1 };
	struct iocb cbs[MAX_CBS];
	struct iocb *ptrs[MAX_CBS];
	long n = 0;
	for (size_t off = 0; off < len; off += CHUNK, n++) {
		memset(&cbs[n], 0, sizeof cbs[n]);
		cbs[n].aio_fildes = (uint32_t)fd;
		cbs[n].aio_lio_opcode = IOCB_CMD_PWRITE;
		cbs[n].aio_buf = (uint64_t)(uintptr_t)(buf + off);
		cbs[n].aio_nbytes = len - off < CHUNK ? len - off : CHUNK;
		cbs[n].aio_offset = (int64_t)off;
		ptrs[n] = &cbs[n];
	}
	long done = 0;
	while (done < n) {
		long r = syscall(SYS_io_submit, ctx, n - done, ptrs + done);
		if (r < 0 && errno != EINTR && errno != EAGAIN)
			return -errno;
		if (r > 0)
			done += r;
	}
	for (long got = 0; got < n;) {
		struct io_event ev[16];
		long r = syscall(SYS_io_getevents, ctx, 1, 16, ev, NULL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (long i = 0; i < r; i++) {
			struct iocb *cb = (struct iocb *)(uintptr_t)ev[i].obj;
			if (ev[i].res < 0)
				return (int)ev[i].res;
			if ((uint64_t)ev[i].res != cb->aio_nbytes)
				return -EIO; /* a short AIO write to a regular file: not worth retrying */
		}
		got += r;
	}
	return 0;
}

/* ---- SQLite helpers ----------------------------------------------------------------------- */

static bool is_busy(int rc) { return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED; }

/* As busy_timeout(BUSY_TIMEOUT_MS), but retrying every 0.2 ms instead of SQLite's sleeps of up
 * to 100 ms: the two threads of group-select contend for every commit, and long sleeps would
 * leave the persisting thread waiting at its max_seq_id commit most of the time, where a
 * capture's lock cannot hurt. */
static int busy_wait(void *arg, int count)
{
	(void)arg;
	if ((double)count * 0.2 > BUSY_TIMEOUT_MS)
		return 0;
	sleep_ms(0.2);
	return 1;
}

static sqlite3 *db_open(const char *path, int flags)
{
	sqlite3 *db;
	int rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_FULLMUTEX, NULL);
	if (rc != SQLITE_OK)
		die("%s: cannot open: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
	sqlite3_busy_handler(db, busy_wait, NULL);
	/* no fsync per commit: commits as short as they can be, so a writer is rarely caught
	 * waiting for the other thread's lock rather than inside its group */
	if (flags & SQLITE_OPEN_READWRITE)
		sqlite3_exec(db, "PRAGMA synchronous=OFF", NULL, NULL, NULL);
	return db;
}

static void db_exec(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	for (;;) {
		int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
		if (rc == SQLITE_OK)
			return;
		if (!is_busy(rc))
			die("%s: %s", sql, err ? err : sqlite3_errstr(rc));
		/* a refused lock upgrade answers BUSY at once: nothing was committed, do it again */
		sqlite3_free(err);
		err = NULL;
		if (!sqlite3_get_autocommit(db))
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		sleep_ms(1);
	}
}

static int64_t db_i64(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	int64_t v = 0;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		die("%s: %s", sql, sqlite3_errmsg(db));
	int rc;
	while (is_busy(rc = sqlite3_step(st))) {
		sqlite3_reset(st);
		sleep_ms(1);
	}
	if (rc != SQLITE_ROW)
		die("%s: %s", sql, rc == SQLITE_DONE ? "no row" : sqlite3_errmsg(db));
	v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* ---- the writer --------------------------------------------------------------------------- */

static volatile sig_atomic_t stop;
static void on_stop(int sig) { (void)sig; stop = 1; }

struct adv {
	enum mode mode;
	const char *store;
	double stall_ms, burst_ms, idle_ms;
	bool on_read;
	sqlite3 *db;
	int fd[MAX_FILES];
	int churn_fd;
	size_t churn_off;
	aio_context_t aio;
	unsigned char *buf[MAX_FILES];
	uint64_t seq, prev;	/* the last completed persist and the one before it */
	uint64_t persists, bursts;
	atomic_uint_fast64_t committed;	/* newest record row, for the ingest thread's mode */
	atomic_bool churning;		/* the churn thread writes while this is set */
	int64_t records;	/* newest record row written by the persisting thread */
};

static void store_path(const struct adv *a, char *out, size_t size, const char *rel)
{
	mkpath(out, size, "%s/%s", a->store, rel);
}

static void write_new(const char *path, const unsigned char *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	int rc = fd < 0 ? -errno : pwrite_all(fd, buf, len, 0);
	if (fd >= 0 && close(fd) != 0 && rc == 0)
		rc = -errno;
	if (rc < 0)
		die("%s: %s", path, strerror(-rc));
}

static void mkdir_in(const struct adv *a, const char *rel)
{
	char path[PATH_MAX];
	store_path(a, path, sizeof path, rel);
	if (mkdir(path, 0755) != 0)
		die("%s: %s", path, strerror(errno));
}

/* A fresh store holding persist 0 and no records. */
static void store_init(struct adv *a)
{
	char path[PATH_MAX];
	if (mkdir(a->store, 0755) != 0)
		die("%s: %s (run needs a STORE that does not exist yet)", a->store, strerror(errno));
	store_path(a, path, sizeof path, DB_NAME);
	sqlite3 *db = db_open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
	db_exec(db, "PRAGMA journal_mode=DELETE; BEGIN;"
		    "CREATE TABLE embeddings_queue(seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);"
		    "CREATE TABLE max_seq_id(segment TEXT PRIMARY KEY, seq INTEGER NOT NULL);"
		    "CREATE TABLE midgroup(seq INTEGER PRIMARY KEY);"
		    "INSERT INTO max_seq_id VALUES('" SEG_DIR "', 0);"
		    "INSERT INTO midgroup VALUES(0);"
		    "COMMIT;");
	sqlite3_close(db);
	mkdir_in(a, SEG_DIR);
	unsigned char *buf = xmalloc(MAX_LEN);
	for (int f = 0; f < nfiles_written(a->mode); f++) {
		if (f == F_X) {
			mkdir_in(a, "current");
			mkdir_in(a, "archive");
		}
		fill(buf, a->mode, f, 0, 0);
		store_path(a, path, sizeof path, file_paths[f]);
		write_new(path, buf, file_len(a->mode, f, 0));
	}
	if (a->mode == M_HARDLINK) {
		char other[PATH_MAX];
		store_path(a, other, sizeof other, file_paths[F_XARCHIVE]);
		if (link(path, other) != 0)
			die("link %s: %s", other, strerror(errno));
	}
	if (a->mode == M_HARDLINK || a->mode == M_AIO) {
		mkdir_in(a, "churn");
		store_path(a, path, sizeof path, CHURN);
		unsigned char *big = xmalloc(CHURN_LEN);
		memset(big, 0x5a, CHURN_LEN);
		write_new(path, big, CHURN_LEN);
		free(big);
	}
	free(buf);
}

/* One transaction: max_seq_id = seq (unless negative) and the records of the next persist.
 * db_exec retries the whole of it when SQLite answers BUSY, COMMIT included. */
static void commit_persisted(struct adv *a, int64_t seq)
{
	char sql[512], upd[128] = "";
	if (seq >= 0)
		mkpath(upd, sizeof upd, "UPDATE max_seq_id SET seq = %" PRId64 ";", seq);
	mkpath(sql, sizeof sql, "BEGIN IMMEDIATE; %s INSERT INTO embeddings_queue(seq, payload)"
	       " WITH RECURSIVE i(x) AS (SELECT %" PRId64 " UNION ALL SELECT x + 1 FROM i WHERE"
	       " x < %" PRId64 ") SELECT x, randomblob(64) FROM i; COMMIT", upd, a->records + 1,
	       a->records + RECORDS_PER_PERSIST);
	db_exec(a->db, sql);
	a->records += RECORDS_PER_PERSIST;
}

/* The other request thread of group-select: a record every 0.3 ms or so, forever. */
static void *ingest_main(void *arg)
{
	struct adv *a = arg;
	char path[PATH_MAX];
	store_path(a, path, sizeof path, DB_NAME);
	sqlite3 *db = db_open(path, SQLITE_OPEN_READWRITE);
	uint64_t n = atomic_load(&a->committed);
	while (!stop) {
		char sql[128];
		mkpath(sql, sizeof sql, "INSERT INTO embeddings_queue VALUES(%" PRIu64
		       ", randomblob(64))", n + 1);
		db_exec(db, sql);
		atomic_store(&a->committed, ++n);
		sleep_ms(0.3);
	}
	sqlite3_close(db);
	return NULL;
}

static void write_file(struct adv *a, int f, uint64_t seq)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	size_t len = file_len(a->mode, f, seq);
	int rc = 0;
	store_path(a, path, sizeof path, file_paths[f]);
	switch (a->mode) {
	case M_AIO:
		rc = aio_write_all(a->aio, a->fd[f], a->buf[f], len);
		break;
	case M_RENAME: {
		mkpath(tmp, sizeof tmp, "%s.tmp", path);
		int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		rc = fd < 0 ? -errno : write_chunked(fd, a->buf[f], len);
		if (rc == 0 && fsync(fd) != 0)
			rc = -errno;
		if (fd >= 0 && close(fd) != 0 && rc == 0)
			rc = -errno;
		if (rc == 0 && rename(tmp, path) != 0)
			rc = -errno;
		break;
	}
	default:
		/* the pickle is truncated and rewritten, as ChromaDB does; the others are overwritten
		 * and then cut to their new length */
		if (f == F_META && ftruncate(a->fd[f], 0) != 0)
			rc = -errno;
		if (rc == 0)
			rc = write_chunked(a->fd[f], a->buf[f], len);
		if (rc == 0 && ftruncate(a->fd[f], (off_t)len) != 0)
			rc = -errno;
	}
	if (rc < 0)
		die("%s: write: %s", path, strerror(-rc));
}

/* A thread of its own, so that the churn goes on while a capture's lock holds the persisting
 * thread at a commit: the capture cannot settle early by stopping the whole writer. */
static void *churn_main(void *arg)
{
	struct adv *a = arg;
	static unsigned char chunk[CHURN_CHUNK];
	while (!stop) {
		if (atomic_load(&a->churning)) {
			put64(chunk, mix64(a->churn_off));
			int rc = pwrite_all(a->churn_fd, chunk, sizeof chunk, (off_t)a->churn_off);
			if (rc < 0)
				die(CHURN ": %s", strerror(-rc));
			a->churn_off = (a->churn_off + CHURN_CHUNK) % CHURN_LEN;
		}
		sleep_ms(10);
	}
	return NULL;
}

static void mid_group(struct adv *a, uint64_t seq)
{
	char sql[128];
	switch (a->mode) {
	case M_COMMIT:
		mkpath(sql, sizeof sql, "INSERT INTO midgroup VALUES(%" PRIu64 ")", seq);
		db_exec(a->db, sql);
		break;
	case M_SELECT:
		(void)db_i64(a->db, "SELECT count(*) FROM max_seq_id");
		break;
	default:
		break;
	}
}

/* One persist of the whole group, then its max_seq_id (with the records of the next one when
 * this thread writes records: one commit, so no other commit sits between two persists).
 * False if there was no new record to persist. */
static bool persist(struct adv *a)
{
	uint64_t seq = a->mode == M_SELECT ? atomic_load(&a->committed) : (uint64_t)a->records;
	if (seq == a->seq)
		return false;
	int n = nfiles_written(a->mode);
	/* built first, so that the writes come in one burst as from an in-memory index */
	for (int f = 0; f < n; f++)
		fill(a->buf[f], a->mode, f, seq, a->seq);
	for (int f = 0; f < n; f++) {
		if (f == MID_AFTER)
			mid_group(a, seq);
		if (f > 0 && (a->mode == M_STALL || a->mode == M_RENAME))
			sleep_ms(a->stall_ms);
		write_file(a, f, seq);
	}
	if (a->mode == M_SELECT) {
		char sql[128];
		mkpath(sql, sizeof sql, "UPDATE max_seq_id SET seq = %" PRIu64, seq);
		db_exec(a->db, sql);
	} else {
		commit_persisted(a, (int64_t)seq);
	}
	a->prev = a->seq;
	a->seq = seq;
	a->persists++;
	return true;
}

/* Waits until another process opens a file of the group (IN_OPEN, in any of their directories).
 * Returns false if asked to stop. */
static bool wait_for_reader(int ino, uint64_t bursts)
{
	char evbuf[4096] __attribute__((aligned(8)));
	/* what the last burst's readers opened is not a new reader */
	while (read(ino, evbuf, sizeof evbuf) > 0)
		;
	printf("armed %" PRIu64 "\n", bursts);
	fflush(stdout);
	while (!stop) {
		struct pollfd p = { .fd = ino, .events = POLLIN };
		if (poll(&p, 1, 100) > 0 && read(ino, evbuf, sizeof evbuf) > 0)
			return true;
	}
	return false;
}

static void burst(struct adv *a)
{
	double end = now_s() + a->burst_ms / 1000;
	bool churn = a->mode == M_HARDLINK || a->mode == M_AIO;
	a->bursts++;
	if (a->on_read) {
		/* until "armed" follows, a reader now would not start a burst of its own */
		printf("burst %" PRIu64 "\n", a->bursts);
		fflush(stdout);
	}
	atomic_store(&a->churning, churn);
	do {
		if (!persist(a))
			sleep_ms(1); /* group-select: wait for the ingest thread's next record */
		if (churn)
			sleep_ms(20); /* the churning file goes on in between */
	} while (now_s() < end && !stop);
	atomic_store(&a->churning, false);
}

static bool aio_raises_events(struct adv *a)
{
	char path[PATH_MAX];
	store_path(a, path, sizeof path, SEG_DIR);
	int ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (ino < 0 || inotify_add_watch(ino, path, IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE) < 0)
		die("inotify: %s", strerror(errno));
	int rc = aio_write_all(a->aio, a->fd[F_HEADER], a->buf[F_HEADER], 64);
	if (rc < 0)
		die("io_submit: %s", strerror(-rc));
	char evbuf[4096] __attribute__((aligned(8)));
	bool seen = read(ino, evbuf, sizeof evbuf) > 0;
	close(ino);
	return seen;
}

static int cmd_run(struct adv *a)
{
	char path[PATH_MAX];
	struct sigaction sa = { .sa_handler = on_stop };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	store_init(a);
	store_path(a, path, sizeof path, DB_NAME);
	a->db = db_open(path, SQLITE_OPEN_READWRITE);
	int n = nfiles_written(a->mode);
	for (int f = 0; f < n; f++) {
		store_path(a, path, sizeof path, file_paths[f]);
		a->buf[f] = xmalloc(MAX_LEN);
		fill(a->buf[f], a->mode, f, 0, 0);
		a->fd[f] = -1;
		if (a->mode != M_RENAME && (a->fd[f] = open(path, O_WRONLY | O_CLOEXEC)) < 0)
			die("%s: %s", path, strerror(errno));
	}
	a->churn_fd = -1;
	if (a->mode == M_HARDLINK || a->mode == M_AIO) {
		store_path(a, path, sizeof path, CHURN);
		if ((a->churn_fd = open(path, O_WRONLY | O_CLOEXEC)) < 0)
			die("%s: %s", path, strerror(errno));
	}
	bool aio_events = false;
	if (a->mode == M_AIO) {
		if (syscall(SYS_io_setup, 128, &a->aio) != 0)
			die("io_setup: %s", strerror(errno));
		aio_events = aio_raises_events(a);
	}
	int ino = -1;
	if (a->on_read) {
		ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
		if (ino < 0)
			die("inotify_init1: %s", strerror(errno));
		/* our own descriptors are all open by now: any open here is someone else's */
		static const char *const dirs[] = { SEG_DIR, "current", "archive" };
		for (int i = 0; i < (a->mode == M_HARDLINK ? 3 : 1); i++) {
			store_path(a, path, sizeof path, dirs[i]);
			if (inotify_add_watch(ino, path, IN_OPEN | IN_ONLYDIR) < 0)
				die("%s: inotify: %s", path, strerror(errno));
		}
	}
	pthread_t helper;
	void *(*helper_main)(void *) = a->mode == M_SELECT ? ingest_main :
				      a->churn_fd >= 0 ? churn_main : NULL;
	if (helper_main && pthread_create(&helper, NULL, helper_main, a) != 0)
		die("pthread_create failed");

	/* one persist before "ready", so every file already holds a persist the database knows */
	if (a->mode != M_SELECT)
		commit_persisted(a, -1);
	while (a->persists == 0 && !stop) {
		persist(a);
		if (a->persists == 0)
			sleep_ms(5);
	}
	printf("adversary: ready, mode %s%s\n", mode_names[a->mode],
	       a->mode == M_AIO ? (aio_events ? ", AIO writes DO raise inotify events here"
				  : ", AIO writes raise no inotify event") : "");
	fflush(stdout);

	while (!stop) {
		if (a->on_read && !wait_for_reader(ino, a->bursts))
			break;
		burst(a);
		/* idle: no plain file written; with --on-read, readers now are this burst's */
		for (double end = now_s() + a->idle_ms / 1000; now_s() < end && !stop;)
			sleep_ms(10);
	}
	if (helper_main)
		pthread_join(helper, NULL);
	sqlite3_close(a->db);
	printf("adversary: %" PRIu64 " persists in %" PRIu64 " bursts, newest persist %" PRIu64 "\n",
	       a->persists, a->bursts, a->seq);
	return 0;
}

/* ---- the checker -------------------------------------------------------------------------- */

struct verdict {
	char text[4096];
	size_t used;
	int violations;
};

static void violation(struct verdict *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void violation(struct verdict *v, const char *fmt, ...)
{
	va_list ap;
	if (v->used < sizeof v->text)
		v->used += (size_t)snprintf(v->text + v->used, sizeof v->text - v->used, "%s",
					    v->violations ? "; " : "");
	va_start(ap, fmt);
	if (v->used < sizeof v->text)
		v->used += (size_t)vsnprintf(v->text + v->used, sizeof v->text - v->used, fmt, ap);
	va_end(ap);
	v->violations++;
}

struct file_facts {
	bool ok;
	uint64_t seq, prev;
	unsigned char *data;
	size_t len;
};

/* One file on its own: present, whole, from one persist. */
static void check_file(struct verdict *v, enum mode m, const char *dir, int f,
		       struct file_facts *ff)
{
	char path[PATH_MAX];
	const char *name = display_name(f);
	mkpath(path, sizeof path, "%s/%s", dir, file_paths[f]);
	int id = f == F_XARCHIVE ? F_X : f;
	int rc = slurp(path, 2 * (size_t)MAX_LEN, &ff->data, &ff->len);
	if (rc < 0) {
		violation(v, "%s: %s", name, rc == -ENOENT ? "missing" : strerror(-rc));
		return;
	}
	const unsigned char *b = ff->data;
	if (ff->len < HDR_LEN) {
		violation(v, "%s: %zu bytes, not even a header", name, ff->len);
		return;
	}
	if (memcmp(b, MAGIC, 8) != 0 || get64(b + 56) != hash_bytes(b, 56) ||
	    get64(b + 8) != (uint64_t)id) {
		violation(v, "%s: header damaged or not this file's", name);
		return;
	}
	uint64_t seq = get64(b + 16), prev = get64(b + 24), want = get64(b + 32);
	if (want != file_len(m, id, seq)) {
		violation(v, "%s: header says %" PRIu64 " bytes, persist %" PRIu64 " writes %zu", name,
			  want, seq, file_len(m, id, seq));
		return;
	}
	if (ff->len != want) {
		violation(v, "%s: torn: %zu bytes, persist %" PRIu64 " wrote %" PRIu64, name, ff->len,
			  seq, want);
		return;
	}
	if (hash_bytes(b + HDR_LEN, ff->len - HDR_LEN) != get64(b + 40)) {
		uint64_t other = seq;
		for (size_t off = BLOCK; off + 8 <= ff->len && other == seq; off += BLOCK)
			other = get64(b + off);
		violation(v, "%s: torn: header from persist %" PRIu64 ", body %s %" PRIu64, name, seq,
			  other == seq ? "damaged, stamped" : "has blocks of persist", other);
		return;
	}
	ff->ok = true;
	ff->seq = seq;
	ff->prev = prev;
}

/* Copies the database and its journal (a copy may hold a hot one) privately and opens the copy
 * read-write, so that SQLite rolls a hot journal back as an application would; COPY itself is
 * never written. */
static sqlite3 *open_private(struct verdict *v, const char *dir, char *tmpdir, size_t tsize)
{
	char src[PATH_MAX], dst[PATH_MAX];
	const char *t = getenv("TMPDIR");
	mkpath(tmpdir, tsize, "%s/adversary-check.XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(tmpdir))
		die("cannot create %s: %s", tmpdir, strerror(errno));
	static const char *const side[] = { "", "-journal" };
	for (int i = 0; i < 2; i++) {
		mkpath(src, sizeof src, "%s/" DB_NAME "%s", dir, side[i]);
		mkpath(dst, sizeof dst, "%s/" DB_NAME "%s", tmpdir, side[i]);
		int rc = copy_file(src, dst);
		if (rc == -ENOENT && i > 0)
			continue;
		if (rc < 0) {
			violation(v, DB_NAME "%s: %s", side[i], rc == -ENOENT ? "missing" : strerror(-rc));
			return NULL;
		}
	}
	mkpath(dst, sizeof dst, "%s/" DB_NAME, tmpdir);
	sqlite3 *db = NULL;
	if (sqlite3_open_v2(dst, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
	    sqlite3_exec(db, "PRAGMA query_only=1", NULL, NULL, NULL) != SQLITE_OK) {
		violation(v, DB_NAME ": cannot open: %s", sqlite3_errmsg(db));
		sqlite3_close(db);
		return NULL;
	}
	return db;
}

static void remove_private(const char *tmpdir)
{
	static const char *const names[] = { DB_NAME, DB_NAME "-journal", DB_NAME "-wal",
					     DB_NAME "-shm" };
	char path[PATH_MAX];
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		mkpath(path, sizeof path, "%s/%s", tmpdir, names[i]);
		unlink(path);
	}
	rmdir(tmpdir);
}

static bool query(struct verdict *v, sqlite3 *db, const char *sql, int64_t *out)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
			*out = sqlite3_column_int64(st, 0);
			sqlite3_finalize(st);
			return true;
		}
		sqlite3_finalize(st);
	}
	violation(v, DB_NAME ": %s: %s", sql, rc == SQLITE_ROW || rc == SQLITE_DONE ? "no value" :
		  sqlite3_errmsg(db));
	return false;
}

static int cmd_check(enum mode m, const char *dir)
{
	struct verdict v = { .used = 0 };
	struct file_facts ff[MAX_FILES] = { 0 };
	int n = m == M_HARDLINK ? F_XARCHIVE + 1 : F_META + 1;
	fatal_status = 3;

	struct stat st;
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		die("%s: not a directory", dir);
	for (int f = 0; f < n; f++)
		check_file(&v, m, dir, f, &ff[f]);
	bool whole = v.violations == 0;
	if (whole && m == M_HARDLINK &&
	    (ff[F_X].len != ff[F_XARCHIVE].len || memcmp(ff[F_X].data, ff[F_XARCHIVE].data,
							  ff[F_X].len) != 0))
		violation(&v, "two names of one file differ: %s is persist %" PRIu64 ", %s persist %"
			  PRIu64, file_paths[F_X], ff[F_X].seq, file_paths[F_XARCHIVE],
			  ff[F_XARCHIVE].seq);
	for (int f = 1; whole && f < n; f++)
		if (ff[f].seq != ff[0].seq || ff[f].prev != ff[0].prev) {
			char list[512];
			size_t used = 0;
			for (int g = 0; g < n && used < sizeof list; g++)
				used += (size_t)snprintf(list + used, sizeof list - used, "%s%s=%" PRIu64,
							 g ? " " : "", display_name(g),
							 ff[g].seq);
			violation(&v, "group from different persists: %s", list);
			whole = false;
		}
	uint64_t fseq = ff[0].seq, fprev = ff[0].prev;
	for (int f = 0; f < n; f++)
		free(ff[f].data);

	char tmpdir[PATH_MAX] = "";
	sqlite3 *db = open_private(&v, dir, tmpdir, sizeof tmpdir);
	int64_t q = 0, count = 0, p = 0, mid = 0;
	bool dbok = false;
	if (db) {
		sqlite3_stmt *ic;
		const char *res = NULL;
		if (sqlite3_prepare_v2(db, "PRAGMA integrity_check(1)", -1, &ic, NULL) == SQLITE_OK &&
		    sqlite3_step(ic) == SQLITE_ROW)
			res = (const char *)sqlite3_column_text(ic, 0);
		if (!res || strcmp(res, "ok") != 0)
			violation(&v, DB_NAME ": integrity_check: %s", res ? res : sqlite3_errmsg(db));
		else
			dbok = query(&v, db, "SELECT coalesce(max(seq), 0) FROM embeddings_queue", &q) &&
			       query(&v, db, "SELECT count(*) FROM embeddings_queue", &count) &&
			       query(&v, db, "SELECT seq FROM max_seq_id", &p) &&
			       query(&v, db, "SELECT max(seq) FROM midgroup", &mid);
		sqlite3_finalize(ic);
		sqlite3_close(db);
	}
	if (tmpdir[0])
		remove_private(tmpdir);
	if (dbok && count != q)
		violation(&v, DB_NAME ": embeddings_queue holds %" PRId64 " rows up to seq %" PRId64
			  " (rows are 1, 2, ...)", count, q);
	if (dbok && whole) {
		if ((int64_t)fseq > q)
			violation(&v, "files are persist %" PRIu64 " but the newest record is %" PRId64
				  ": database older than the files", fseq, q);
		if (p != (int64_t)fseq && p != (int64_t)fprev)
			violation(&v, "max_seq_id is %" PRId64 ", files are persist %" PRIu64
				  " (after %" PRIu64 "): database %s than the files", p, fseq, fprev,
				  p > (int64_t)fseq ? "newer" : "older");
		if (m == M_COMMIT && mid != (int64_t)fseq)
			violation(&v, "midgroup is %" PRId64 ", files are persist %" PRIu64
				  ": the commit inside the group is on the other side of the cut",
				  mid, fseq);
	}
	if (v.violations) {
		printf("torn: %s\n", v.text);
		return 1;
	}
	printf("consistent: persist %" PRIu64 " (after %" PRIu64 "), max_seq_id %" PRId64
	       ", newest record %" PRId64 "\n", fseq, fprev, p, q);
	return 0;
}

/* ---- command line ------------------------------------------------------------------------- */

#define SYNOPSIS \
	"usage: adversary run --mode MODE [--stall-ms N] [--burst-ms N] [--idle-ms N] [--on-read] STORE\n" \
	"       adversary check --mode MODE COPY\n" \
	"MODE: group-commit, group-select, hardlink, aio, stall, rename-stall\n"

static void bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void bad_usage(const char *fmt, ...)
{
	va_list ap;
	fputs("adversary: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n" SYNOPSIS, stderr);
	exit(2);
}

static double ms_arg(const char *name, const char *s)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || *end || end == s || !(v >= 0) || v > 3600e3)
		bad_usage("%s: expected milliseconds, got \"%s\"", name, s);
	return v;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		bad_usage("missing command");
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		fputs(SYNOPSIS, stdout);
		return 0;
	}
	const char *cmd = argv[1];
	bool run = strcmp(cmd, "run") == 0;
	if (!run && strcmp(cmd, "check") != 0)
		bad_usage("unknown command \"%s\"", cmd);
	static const struct option opts[] = {
		{ "mode", required_argument, NULL, 'm' },
		{ "stall-ms", required_argument, NULL, 's' },
		{ "burst-ms", required_argument, NULL, 'b' },
		{ "idle-ms", required_argument, NULL, 'i' },
		{ "on-read", no_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	struct adv a = { .mode = M_COUNT, .stall_ms = 150, .burst_ms = -1, .idle_ms = -1 };
	int opt;
	opterr = 0;
	while ((opt = getopt_long(argc - 1, argv + 1, "", opts, NULL)) != -1) {
		if (opt != 'm' && !run)
			bad_usage("check takes --mode only");
		switch (opt) {
		case 'm':
			for (int i = 0; i < M_COUNT; i++)
				if (strcmp(optarg, mode_names[i]) == 0)
					a.mode = (enum mode)i;
			if (a.mode == M_COUNT)
				bad_usage("unknown mode \"%s\"", optarg);
			break;
		case 's': a.stall_ms = ms_arg("--stall-ms", optarg); break;
		case 'b': a.burst_ms = ms_arg("--burst-ms", optarg); break;
		case 'i': a.idle_ms = ms_arg("--idle-ms", optarg); break;
		case 'r': a.on_read = true; break;
		default: bad_usage("%s: unknown option or missing value: %s", cmd, argv[optind]);
		}
	}
	if (a.mode == M_COUNT)
		bad_usage("%s needs --mode", cmd);
	if (argc - 1 - optind != 1)
		bad_usage("%s: expected exactly one %s", cmd, run ? "STORE" : "COPY");
	const char *path = argv[1 + optind];
	if (!run)
		return cmd_check(a.mode, path);
	a.store = path;
	/* Set off by a reader, a burst must outlast a capture's first pass, and the cool-down must
	 * outlast a capture's last recopies, or these would set off the next burst; without
	 * --on-read, bursts must leave idle time for a cut. */
	if (a.burst_ms < 0)
		a.burst_ms = a.on_read ? 1500 : 1200;
	if (a.idle_ms < 0)
		a.idle_ms = a.on_read ? 800 : 1000;
	return cmd_run(&a);
}
