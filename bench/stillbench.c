/* SPDX-License-Identifier: GPL-2.0-or-later */
/* stillbench: the small measuring tools behind bench/bench.sh. Prefix: sb_.
 *
 *   stillbench sqlw DB [--wal] [--sync full|normal] [--seconds S] [--row BYTES]
 *       one row per transaction for S seconds; prints commits/s and commit latency percentiles.
 *       The longest commit is the longest stall a snapshot caused.
 *   stillbench sqlfill DB BYTES [--append] [--seed N]
 *       create (or grow) a rollback-journal database by about BYTES of incompressible rows.
 *   stillbench fill FILE BYTES [--seed N]
 *       write BYTES of pseudo-random data into FILE in place (no truncation first, as ChromaDB
 *       rewrites its index files), then truncate to BYTES.
 *   stillbench read FILE seq [--bs BYTES]
 *   stillbench read FILE rand [--bs BYTES] [--count N] [--seed N]
 *   stillbench read FILE evict
 *       time a sequential read, or random reads; evict drops this file's clean cached pages
 *       (on a FUSE file: the FUSE inode's pages only, not the backing file's).
 *   stillbench tree DIR N [--size BYTES]     N files in DIR/dNNNN/fNNNNNN, 100 per directory
 *   stillbench meta DIR N stat|open|statone  stat / open+close every file by its full path;
 *                                            statone: stat the first file N times
 *   stillbench hashmem [--mib N] [--threads T] [--many]
 *       SHA-256 (the engine's, SHA-NI when present) of a hot buffer: the CPU cost of hashing;
 *       --many: as many 1 MiB blocks side by side as sha256_many takes (16 with AVX-512),
 *       which is how the engine hashes large files and databases.
 *   stillbench hashtree DIR [--threads T]
 *       read every file of DIR in 1 MiB blocks and hash each block: the engine's read+hash
 *       work without any writing.
 *   stillbench rwcopy SRC DST
 *       copy a tree of regular files with read/write through one 1 MiB buffer, no hashing:
 *       the engine's copy work without the digest.
 *   stillbench cfrcopy SRC DST [--threads T]
 *       prototype of a cheaper engine copy: copy_file_range in 8 MiB chunks (in the kernel,
 *       as cp does) while T threads compute the sha256-1m digest of each copied chunk through
 *       a mapping of the private destination (no copy to user space; no mapping of a live
 *       file that a writer could truncate under us).
 *   stillbench dbdelta PREV LIVE OUT
 *       prototype of a page-level database capture: OUT = copy of PREV (in the kernel), then
 *       every 4 KiB page of LIVE that differs from PREV is written over it, and only the
 *       1 MiB blocks that changed are hashed again.
 *   stillbench cptree SRC DST
 *       copy a tree with the engine's own cp_file (copy + sha256-1m digest on its thread
 *       pool), nothing else of a capture: runs under valgrind, which cannot run stillctl
 *       (valgrind 3.19 does not know openat2).
 *   stillbench run OUT -- CMD [ARG...]       run CMD; append elapsed, cpu and max RSS to OUT
 *   stillbench rss PID OUT [--ms N]          sample the resident memory of PID and of its
 *                                            children until PID exits or SIGTERM; write peaks
 *
 * Every measurement prints one line of key=value pairs on stdout. */
#include "copy.h"
#include "sha256.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double sb_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sb_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void sb_die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "stillbench: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

/* xorshift64*: incompressible enough for a filesystem and far faster than /dev/urandom. */
static uint64_t sb_rng(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static void sb_random(uint8_t *p, size_t n, uint64_t *s)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t v = sb_rng(s);
		memcpy(p + i, &v, 8);
	}
	for (; i < n; i++)
		p[i] = (uint8_t)sb_rng(s);
}

static const char *sb_opt(int argc, char **argv, const char *name, const char *def)
{
	for (int i = 0; i + 1 < argc; i++)
		if (!strcmp(argv[i], name))
			return argv[i + 1];
	return def;
}

/* xorshift needs a state other than 0; 2N+1 keeps every --seed N distinct. */
static uint64_t sb_seed(int argc, char **argv, const char *dflt)
{
	return (strtoull(sb_opt(argc, argv, "--seed", dflt), NULL, 0) << 1) | 1;
}

static int sb_flag(int argc, char **argv, const char *name)
{
	for (int i = 0; i < argc; i++)
		if (!strcmp(argv[i], name))
			return 1;
	return 0;
}

static int sb_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void sb_sql(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
		sb_die("sqlite: %s", err ? err : sqlite3_errmsg(db));
}

/* ---- SQLite ----------------------------------------------------------------------------- */

static int sb_sqlw(int argc, char **argv)
{
	if (argc < 1)
		sb_die("%s", "usage: stillbench sqlw DB [--wal] [--sync full|normal] [--seconds S]");
	const char *path = argv[0];
	int wal = sb_flag(argc, argv, "--wal");
	const char *sync = sb_opt(argc, argv, "--sync", "full");
	double secs = atof(sb_opt(argc, argv, "--seconds", "5"));
	int row = atoi(sb_opt(argc, argv, "--row", "100"));
	sqlite3 *db;
	char sql[256];

	if (sqlite3_open(path, &db) != SQLITE_OK)
		sb_die("cannot open %s", path);
	/* What applications do (ChromaDB: 1000 s); a writer held by a snapshot waits, it does not
	 * fail, and the wait shows up as that commit's latency. */
	sqlite3_busy_timeout(db, 600000);
	sb_sql(db, wal ? "PRAGMA journal_mode=WAL" : "PRAGMA journal_mode=DELETE");
	snprintf(sql, sizeof sql, "PRAGMA synchronous=%s", sync);
	sb_sql(db, sql);
	sb_sql(db, "CREATE TABLE IF NOT EXISTS bench_w(id INTEGER PRIMARY KEY, t REAL, v BLOB)");

	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, "INSERT INTO bench_w(t, v) VALUES(?1, ?2)", -1, &st, NULL))
		sb_die("sqlite: %s", sqlite3_errmsg(db));
	uint8_t *blob = malloc((size_t)row);
	uint64_t seed = 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid();
	size_t n = 0, cap = 1 << 16;
	double *lat = malloc(cap * sizeof *lat);
	double t0 = sb_now(), end = t0 + secs, now = t0;
	while (now < end) {
		sb_random(blob, (size_t)row, &seed);
		sqlite3_bind_double(st, 1, now);
		sqlite3_bind_blob(st, 2, blob, row, SQLITE_STATIC);
		double a = sb_now();
		int rc = sqlite3_step(st);
		now = sb_now();
		if (rc != SQLITE_DONE)
			sb_die("commit failed: %s", sqlite3_errmsg(db));
		sqlite3_reset(st);
		if (n == cap) {
			cap *= 2;
			lat = realloc(lat, cap * sizeof *lat);
		}
		lat[n++] = now - a;
	}
	double el = now - t0;
	qsort(lat, n, sizeof *lat, sb_cmp_double);
#define PCT(p) (n ? lat[(size_t)((double)(n - 1) * (p))] * 1e3 : 0.0)
	printf("commits=%zu seconds=%.3f rate=%.1f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f\n",
	       n, el, (double)n / el, PCT(0.5), PCT(0.99), PCT(0.999), n ? lat[n - 1] * 1e3 : 0.0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	free(lat);
	free(blob);
	return 0;
}

static int sb_sqlfill(int argc, char **argv)
{
	if (argc < 2)
		sb_die("%s", "usage: stillbench sqlfill DB BYTES [--append] [--seed N]");
	const char *path = argv[0];
	double bytes = atof(argv[1]);
	uint64_t seed = sb_seed(argc, argv, "1");
	const int row = 3000; /* one row per 4 KiB page, like embeddings with metadata */
	sqlite3 *db;
	if (sqlite3_open(path, &db) != SQLITE_OK)
		sb_die("cannot open %s", path);
	sb_sql(db, "PRAGMA journal_mode=DELETE");
	sb_sql(db, "PRAGMA synchronous=OFF");
	sb_sql(db, "CREATE TABLE IF NOT EXISTS rows(id INTEGER PRIMARY KEY, k TEXT, v BLOB)");
	sb_sql(db, "BEGIN");
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, "INSERT INTO rows(k, v) VALUES(?1, ?2)", -1, &st, NULL))
		sb_die("sqlite: %s", sqlite3_errmsg(db));
	uint8_t blob[3000];
	char key[32];
	long rows = (long)(bytes / 4096.0);
	for (long i = 0; i < rows; i++) {
		sb_random(blob, sizeof blob, &seed);
		snprintf(key, sizeof key, "k%016llx", (unsigned long long)sb_rng(&seed));
		sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
		sqlite3_bind_blob(st, 2, blob, row, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE)
			sb_die("insert: %s", sqlite3_errmsg(db));
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	sb_sql(db, "COMMIT");
	sqlite3_close(db);
	struct stat s;
	stat(path, &s);
	printf("db_bytes=%lld rows_added=%ld\n", (long long)s.st_size, rows);
	return 0;
}

/* ---- files ------------------------------------------------------------------------------ */

static int sb_fill(int argc, char **argv)
{
	if (argc < 2)
		sb_die("%s", "usage: stillbench fill FILE BYTES [--seed N]");
	uint64_t seed = sb_seed(argc, argv, "7");
	long long bytes = atoll(argv[1]);
	int fd = open(argv[0], O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		sb_die("cannot open %s", argv[0]);
	size_t bs = 1 << 20;
	uint8_t *buf = malloc(bs);
	for (long long off = 0; off < bytes; off += (long long)bs) {
		size_t n = bytes - off < (long long)bs ? (size_t)(bytes - off) : bs;
		sb_random(buf, n, &seed);
		if (pwrite(fd, buf, n, off) != (ssize_t)n)
			sb_die("write %s failed", argv[0]);
	}
	if (ftruncate(fd, bytes) < 0)
		sb_die("truncate %s failed", argv[0]);
	close(fd);
	free(buf);
	return 0;
}

static int sb_read(int argc, char **argv)
{
	if (argc < 2)
		sb_die("%s", "usage: stillbench read FILE seq|rand|evict [--bs N] [--count N]");
	const char *mode = argv[1];
	int fd = open(argv[0], O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		sb_die("cannot open %s", argv[0]);
	if (!strcmp(mode, "evict")) {
		int rc = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		close(fd);
		if (rc)
			sb_die("fadvise: %s", strerror(rc));
		return 0;
	}
	int rnd = !strcmp(mode, "rand");
	size_t bs = (size_t)atoll(sb_opt(argc, argv, "--bs", rnd ? "16384" : "1048576"));
	uint8_t *buf = aligned_alloc(4096, (bs + 4095) / 4096 * 4096);
	struct stat s;
	fstat(fd, &s);
	long long total = 0, ops = 0;
	double t0 = sb_now();
	if (!rnd) {
		ssize_t r;
		while ((r = read(fd, buf, bs)) > 0) {
			total += r;
			ops++;
		}
		if (r < 0)
			sb_die("read: %s", strerror(errno));
	} else {
		long long count = atoll(sb_opt(argc, argv, "--count", "16384"));
		uint64_t seed = sb_seed(argc, argv, "42");
		long long blocks = (long long)s.st_size / (long long)bs;
		if (blocks < 1)
			sb_die("%s is smaller than one block", argv[0]);
		for (ops = 0; ops < count; ops++) {
			off_t off = (off_t)(sb_rng(&seed) % (uint64_t)blocks) * (off_t)bs;
			ssize_t r = pread(fd, buf, bs, off);
			if (r < 0)
				sb_die("pread: %s", strerror(errno));
			total += r;
		}
	}
	double el = sb_now() - t0;
	printf("bytes=%lld ops=%lld seconds=%.4f mibps=%.1f iops=%.0f\n", total, ops, el,
	       (double)total / el / 1048576.0, (double)ops / el);
	close(fd);
	free(buf);
	return 0;
}

/* ---- metadata --------------------------------------------------------------------------- */

static void sb_tree_path(char *buf, size_t len, const char *dir, long i)
{
	snprintf(buf, len, "%s/d%04ld/f%06ld", dir, i / 100, i);
}

static int sb_tree(int argc, char **argv)
{
	if (argc < 2)
		sb_die("%s", "usage: stillbench tree DIR N [--size BYTES]");
	long n = atol(argv[1]);
	size_t size = (size_t)atol(sb_opt(argc, argv, "--size", "0"));
	char path[4096];
	uint8_t buf[65536];
	uint64_t seed = 3;
	if (size > sizeof buf)
		size = sizeof buf;
	mkdir(argv[0], 0755);
	for (long i = 0; i < n; i++) {
		if (i % 100 == 0) {
			snprintf(path, sizeof path, "%s/d%04ld", argv[0], i / 100);
			if (mkdir(path, 0755) < 0 && errno != EEXIST)
				sb_die("mkdir %s failed", path);
		}
		sb_tree_path(path, sizeof path, argv[0], i);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0)
			sb_die("cannot create %s", path);
		if (size) {
			sb_random(buf, size, &seed);
			if (write(fd, buf, size) != (ssize_t)size)
				sb_die("write %s failed", path);
		}
		close(fd);
	}
	return 0;
}

static int sb_meta(int argc, char **argv)
{
	if (argc < 3)
		sb_die("%s", "usage: stillbench meta DIR N stat|open|statone");
	long n = atol(argv[1]);
	int do_open = !strcmp(argv[2], "open"), one = !strcmp(argv[2], "statone");
	char path[4096];
	struct stat s;
	double t0 = sb_now();
	for (long i = 0; i < n; i++) {
		sb_tree_path(path, sizeof path, argv[0], one ? 0 : i);
		if (do_open) {
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				sb_die("open %s failed", path);
			close(fd);
		} else if (stat(path, &s) < 0) {
			sb_die("stat %s failed", path);
		}
	}
	double el = sb_now() - t0;
	printf("ops=%ld seconds=%.4f opsps=%.0f us_per_op=%.2f\n", n, el, (double)n / el,
	       el / (double)n * 1e6);
	return 0;
}

/* ---- floors: what hashing and a user-space copy cost on this machine ---------------------- */

static int sb_hashmem(int argc, char **argv)
{
	long mib = atol(sb_opt(argc, argv, "--mib", "512"));
	int threads = atoi(sb_opt(argc, argv, "--threads", "1"));
	int lanes = sb_flag(argc, argv, "--many") ? sha256_many_lanes() : 1;
	size_t bs = 1 << 20;
	uint8_t *buf = malloc(bs * (size_t)lanes);
	const void *msgs[64];
	uint8_t (*outs)[32] = malloc(32 * (size_t)lanes);
	if (!buf || !outs || lanes > 64)
		sb_die("%s", "out of memory");
	uint64_t seed = 5;
	sb_random(buf, bs * (size_t)lanes, &seed);
	for (int l = 0; l < lanes; l++)
		msgs[l] = buf + (size_t)l * bs;
	/* warm up: pick the implementation, fault the buffers */
	sha256_many(msgs, (size_t)lanes, bs, outs);
	double t0 = sb_now();
	if (threads <= 1) {
		for (long i = 0; i < mib; i += lanes)
			sha256_many(msgs, (size_t)lanes, bs, outs);
	} else {
		pid_t kids[64];
		/* Processes, not threads: nothing shared but the CPU. */
		for (int t = 0; t < threads && t < 64; t++) {
			if ((kids[t] = fork()) == 0) {
				for (long i = 0; i < mib / threads; i += lanes)
					sha256_many(msgs, (size_t)lanes, bs, outs);
				_exit(0);
			}
		}
		for (int t = 0; t < threads && t < 64; t++)
			waitpid(kids[t], NULL, 0);
	}
	double el = sb_now() - t0;
	printf("mib=%ld threads=%d lanes=%d seconds=%.4f mibps=%.1f shani=%d\n", mib, threads, lanes,
	       el, (double)mib / el, sha256_accelerated());
	free(buf);
	free(outs);
	return 0;
}

struct sb_file {
	char *path;
	long long size;
};
static struct sb_file *sb_files;
static size_t sb_nfiles, sb_capfiles;

static int sb_collect(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)ftw;
	if (type != FTW_F || !S_ISREG(st->st_mode))
		return 0;
	if (sb_nfiles == sb_capfiles) {
		sb_capfiles = sb_capfiles ? sb_capfiles * 2 : 256;
		sb_files = realloc(sb_files, sb_capfiles * sizeof *sb_files);
	}
	sb_files[sb_nfiles].path = strdup(path);
	sb_files[sb_nfiles].size = (long long)st->st_size;
	sb_nfiles++;
	return 0;
}

static atomic_size_t sb_next_file;
static atomic_llong sb_hashed;

static void *sb_hash_worker(void *arg)
{
	(void)arg;
	uint8_t *buf = malloc(1 << 20), d[32];
	for (;;) {
		size_t i = atomic_fetch_add(&sb_next_file, 1);
		if (i >= sb_nfiles)
			break;
		int fd = open(sb_files[i].path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t r;
		off_t off = 0;
		while ((r = pread(fd, buf, 1 << 20, off)) > 0) {
			sha256(buf, (size_t)r, d);
			off += r;
		}
		atomic_fetch_add(&sb_hashed, (long long)off);
		close(fd);
	}
	free(buf);
	return NULL;
}

static int sb_hashtree(int argc, char **argv)
{
	if (argc < 1)
		sb_die("%s", "usage: stillbench hashtree DIR [--threads T]");
	int threads = atoi(sb_opt(argc, argv, "--threads", "2"));
	if (threads < 1 || threads > 64)
		threads = 2;
	nftw(argv[0], sb_collect, 64, FTW_PHYS);
	pthread_t th[64];
	double t0 = sb_now();
	for (int t = 0; t < threads; t++)
		pthread_create(&th[t], NULL, sb_hash_worker, NULL);
	for (int t = 0; t < threads; t++)
		pthread_join(th[t], NULL);
	double el = sb_now() - t0;
	long long b = atomic_load(&sb_hashed);
	printf("bytes=%lld threads=%d seconds=%.4f mibps=%.1f\n", b, threads, el,
	       (double)b / el / 1048576.0);
	return 0;
}

static const char *sb_src_root, *sb_dst_root;
static uint8_t *sb_copybuf;
static long long sb_copied;

/* The part of the tree-copy walks both copiers share: mirror directories, and for a regular
 * file open the source and create the destination (dst gets its path). 1 when a file pair is
 * open, 0 when there is nothing more to do for this entry. */
static int sb_walk_open(const char *path, const struct stat *st, int type, int out_flags,
			char dst[8192], int *in, int *out)
{
	snprintf(dst, 8192, "%s%s", sb_dst_root, path + strlen(sb_src_root));
	if (type == FTW_D) {
		if (mkdir(dst, st->st_mode & 07777) < 0 && errno != EEXIST)
			sb_die("mkdir %s failed", dst);
		return 0;
	}
	if (type != FTW_F || !S_ISREG(st->st_mode))
		return 0;
	*in = open(path, O_RDONLY | O_CLOEXEC);
	*out = open(dst, out_flags | O_CREAT | O_EXCL | O_CLOEXEC, st->st_mode & 07777);
	if (*in < 0 || *out < 0)
		sb_die("cannot copy %s", path);
	return 1;
}

static int sb_copy_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)ftw;
	char dst[8192];
	int in, out;
	if (!sb_walk_open(path, st, type, O_WRONLY, dst, &in, &out))
		return 0;
	ssize_t r;
	while ((r = read(in, sb_copybuf, 1 << 20)) > 0) {
		if (write(out, sb_copybuf, (size_t)r) != r)
			sb_die("write %s failed", dst);
		sb_copied += r;
	}
	close(in);
	close(out);
	return 0;
}

static int sb_rwcopy(int argc, char **argv)
{
	if (argc < 2)
		sb_die("%s", "usage: stillbench rwcopy SRC DST");
	sb_src_root = argv[0];
	sb_dst_root = argv[1];
	sb_copybuf = malloc(1 << 20);
	double t0 = sb_now();
	if (nftw(argv[0], sb_copy_one, 64, FTW_PHYS) != 0)
		sb_die("cannot walk %s", argv[0]);
	double el = sb_now() - t0;
	printf("bytes=%lld seconds=%.4f mibps=%.1f\n", sb_copied, el,
	       (double)sb_copied / el / 1048576.0);
	return 0;
}

/* ---- prototypes of cheaper capture paths -------------------------------------------------- */

#define SB_BLOCK ((size_t)1 << 20)

struct sb_job {
	const uint8_t *p;
	size_t len;
	uint8_t *out;
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv, idle;
	struct sb_job *q;
	size_t head, tail, cap, busy;
	int done;
} sb_q = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
	   NULL, 0, 0, 0, 0, 0 };

static void sb_push(const uint8_t *p, size_t len, uint8_t *out)
{
	pthread_mutex_lock(&sb_q.mu);
	if (sb_q.tail == sb_q.cap) {
		sb_q.cap = sb_q.cap ? sb_q.cap * 2 : 1024;
		sb_q.q = realloc(sb_q.q, sb_q.cap * sizeof *sb_q.q);
	}
	sb_q.q[sb_q.tail++] = (struct sb_job){ p, len, out };
	pthread_cond_signal(&sb_q.cv);
	pthread_mutex_unlock(&sb_q.mu);
}

static void *sb_hasher(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&sb_q.mu);
	for (;;) {
		if (sb_q.head < sb_q.tail) {
			struct sb_job j = sb_q.q[sb_q.head++];
			sb_q.busy++;
			pthread_mutex_unlock(&sb_q.mu);
			sha256(j.p, j.len, j.out);
			pthread_mutex_lock(&sb_q.mu);
			sb_q.busy--;
			if (sb_q.head == sb_q.tail && !sb_q.busy)
				pthread_cond_broadcast(&sb_q.idle);
			continue;
		}
		if (sb_q.done)
			break;
		pthread_cond_wait(&sb_q.cv, &sb_q.mu);
	}
	pthread_mutex_unlock(&sb_q.mu);
	return NULL;
}

static void sb_drain(void)
{
	pthread_mutex_lock(&sb_q.mu);
	while (sb_q.head < sb_q.tail || sb_q.busy)
		pthread_cond_wait(&sb_q.idle, &sb_q.mu);
	pthread_mutex_unlock(&sb_q.mu);
}

struct sb_copy {
	uint8_t *map;
	size_t size, nblocks;
	uint8_t *digests;
};
static struct sb_copy *sb_copies;
static size_t sb_ncopies, sb_capcopies;
static long long sb_cfr_bytes;

static int sb_cfr_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)ftw;
	char dst[8192];
	int in, out;
	if (!sb_walk_open(path, st, type, O_RDWR, dst, &in, &out))
		return 0;
	size_t size = (size_t)st->st_size;
	if (sb_ncopies == sb_capcopies) {
		sb_capcopies = sb_capcopies ? sb_capcopies * 2 : 256;
		sb_copies = realloc(sb_copies, sb_capcopies * sizeof *sb_copies);
	}
	struct sb_copy *c = &sb_copies[sb_ncopies++];
	c->size = size;
	c->nblocks = (size + SB_BLOCK - 1) / SB_BLOCK;
	c->digests = malloc(c->nblocks * 32 + 32);
	c->map = NULL;
	if (size && ftruncate(out, (off_t)size) == 0)
		c->map = mmap(NULL, size, PROT_READ, MAP_SHARED, out, 0);
	if (size && c->map == MAP_FAILED)
		sb_die("mmap %s failed", dst);
	size_t done = 0, hashed = 0;
	while (done < size) {
		size_t want = size - done < 8 * SB_BLOCK ? size - done : 8 * SB_BLOCK;
		loff_t io = (loff_t)done, oo = (loff_t)done;
		ssize_t n = copy_file_range(in, &io, out, &oo, want, 0);
		if (n <= 0)
			sb_die("copy_file_range %s failed", path);
		done += (size_t)n;
		/* Blocks wholly copied go to the hashers while the next chunk is copied. */
		while (hashed < done && (done - hashed >= SB_BLOCK || done == size)) {
			size_t len = size - hashed < SB_BLOCK ? size - hashed : SB_BLOCK;
			sb_push(c->map + hashed, len, c->digests + (hashed / SB_BLOCK) * 32);
			hashed += len;
		}
	}
	sb_cfr_bytes += (long long)size;
	close(in);
	close(out);
	return 0;
}

static int sb_cfrcopy(int argc, char **argv)
{
	if (argc < 2)
		sb_die("%s", "usage: stillbench cfrcopy SRC DST [--threads T]");
	int threads = atoi(sb_opt(argc, argv, "--threads", "2"));
	if (threads < 1 || threads > 64)
		threads = 2;
	sb_src_root = argv[0];
	sb_dst_root = argv[1];
	pthread_t th[64];
	double t0 = sb_now();
	for (int t = 0; t < threads; t++)
		pthread_create(&th[t], NULL, sb_hasher, NULL);
	if (nftw(argv[0], sb_cfr_one, 64, FTW_PHYS) != 0)
		sb_die("cannot walk %s", argv[0]);
	sb_drain();
	uint8_t check[32] = { 0 };
	for (size_t i = 0; i < sb_ncopies; i++) {
		struct sb_copy *c = &sb_copies[i];
		uint8_t d[32];
		if (c->nblocks > 1)
			sha256(c->digests, c->nblocks * 32, d); /* sha256-1m: hash of block hashes */
		else if (c->nblocks == 1)
			memcpy(d, c->digests, 32);
		else
			sha256("", 0, d);
		for (int k = 0; k < 32; k++)
			check[k] ^= d[k];
		if (c->map)
			munmap(c->map, c->size);
		free(c->digests);
	}
	double el = sb_now() - t0;
	pthread_mutex_lock(&sb_q.mu);
	sb_q.done = 1;
	pthread_cond_broadcast(&sb_q.cv);
	pthread_mutex_unlock(&sb_q.mu);
	for (int t = 0; t < threads; t++)
		pthread_join(th[t], NULL);
	char hex[65];
	sha256_hex(check, hex);
	printf("bytes=%lld files=%zu seconds=%.4f mibps=%.1f xor_digest=%.16s\n", sb_cfr_bytes,
	       sb_ncopies, el, (double)sb_cfr_bytes / el / 1048576.0, hex);
	return 0;
}

static int sb_dbdelta(int argc, char **argv)
{
	if (argc < 3)
		sb_die("%s", "usage: stillbench dbdelta PREV LIVE OUT");
	double t0 = sb_now();
	int pf = open(argv[0], O_RDONLY | O_CLOEXEC), lf = open(argv[1], O_RDONLY | O_CLOEXEC);
	int of = open(argv[2], O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	struct stat ps, ls;
	if (pf < 0 || lf < 0 || of < 0 || fstat(pf, &ps) < 0 || fstat(lf, &ls) < 0)
		sb_die("%s", "dbdelta: cannot open the files");
	size_t psize = (size_t)ps.st_size, lsize = (size_t)ls.st_size;
	/* 1. the previous copy, in the kernel */
	loff_t io = 0, oo = 0;
	while ((size_t)io < psize) {
		ssize_t n = copy_file_range(pf, &io, of, &oo, psize - (size_t)io, 0);
		if (n <= 0)
			sb_die("%s", "copy_file_range failed");
	}
	double t1 = sb_now();
	/* 2. pages that differ */
	const uint8_t *pm = mmap(NULL, psize, PROT_READ, MAP_SHARED, pf, 0);
	const uint8_t *lm = mmap(NULL, lsize, PROT_READ, MAP_SHARED, lf, 0);
	if (pm == MAP_FAILED || lm == MAP_FAILED)
		sb_die("%s", "mmap failed");
	size_t nblocks = (lsize + SB_BLOCK - 1) / SB_BLOCK, pages = 0;
	uint8_t *dirty = calloc(nblocks + 1, 1);
	for (size_t off = 0; off < lsize; off += 4096) {
		size_t len = lsize - off < 4096 ? lsize - off : 4096;
		if (off + len <= psize && !memcmp(pm + off, lm + off, len))
			continue;
		if (pwrite(of, lm + off, len, (off_t)off) != (ssize_t)len)
			sb_die("%s", "pwrite failed");
		dirty[off / SB_BLOCK] = 1;
		pages++;
	}
	if (ftruncate(of, (off_t)lsize) < 0)
		sb_die("%s", "ftruncate failed");
	double t2 = sb_now();
	/* 3. rehash the changed blocks (the others' digests would come from the previous copy) */
	const uint8_t *om = mmap(NULL, lsize, PROT_READ, MAP_SHARED, of, 0);
	if (om == MAP_FAILED)
		sb_die("%s", "mmap failed");
	size_t rehashed = 0;
	uint8_t d[32];
	for (size_t b = 0; b < nblocks; b++) {
		if (!dirty[b])
			continue;
		size_t off = b * SB_BLOCK, len = lsize - off < SB_BLOCK ? lsize - off : SB_BLOCK;
		sha256(om + off, len, d);
		rehashed++;
	}
	double t3 = sb_now();
	printf("seconds=%.4f copy_s=%.4f compare_s=%.4f hash_s=%.4f pages_changed=%zu "
	       "blocks_rehashed=%zu of=%zu\n", t3 - t0, t1 - t0, t2 - t1, t3 - t2, pages, rehashed,
	       nblocks);
	return 0;
}

static long long sb_cp_bytes;

static int sb_cp_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)ftw;
	char dst[8192];
	snprintf(dst, sizeof dst, "%s%s", sb_dst_root, path + strlen(sb_src_root));
	if (type == FTW_D) {
		if (mkdir(dst, st->st_mode & 07777) < 0 && errno != EEXIST)
			sb_die("mkdir %s failed", dst);
		return 0;
	}
	if (type != FTW_F || !S_ISREG(st->st_mode))
		return 0;
	int in = open(path, O_RDONLY | O_CLOEXEC);
	int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st->st_mode & 07777);
	struct cp_result r;
	if (in < 0 || out < 0 || cp_file(in, out, 1, &r) != 0)
		sb_die("cannot copy %s", path);
	sb_cp_bytes += (long long)r.size;
	close(in);
	close(out);
	return 0;
}

static int sb_cptree(int argc, char **argv)
{
	if (argc < 2)
		sb_die("%s", "usage: stillbench cptree SRC DST");
	sb_src_root = argv[0];
	sb_dst_root = argv[1];
	double t0 = sb_now();
	if (nftw(argv[0], sb_cp_one, 64, FTW_PHYS) != 0)
		sb_die("cannot walk %s", argv[0]);
	double el = sb_now() - t0;
	printf("bytes=%lld seconds=%.4f mibps=%.1f shani=%d\n", sb_cp_bytes, el,
	       (double)sb_cp_bytes / el / 1048576.0, sha256_accelerated());
	return 0;
}

/* ---- processes -------------------------------------------------------------------------- */

static int sb_run(int argc, char **argv)
{
	int i = 1;
	while (i < argc && strcmp(argv[i], "--"))
		i++;
	if (argc < 1 || i + 1 >= argc)
		sb_die("%s", "usage: stillbench run OUT -- CMD [ARG...]");
	double t0 = sb_now();
	pid_t pid = fork();
	if (pid == 0) {
		execvp(argv[i + 1], argv + i + 1);
		_exit(127);
	}
	int status;
	struct rusage ru;
	if (wait4(pid, &status, 0, &ru) < 0)
		sb_die("%s", "wait failed");
	double el = sb_now() - t0;
	FILE *f = fopen(argv[0], "a");
	if (!f)
		sb_die("cannot write %s", argv[0]);
	int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	fprintf(f, "rc=%d elapsed=%.4f user=%.3f sys=%.3f maxrss_kib=%ld\n", rc, el,
		(double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6,
		(double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6, ru.ru_maxrss);
	fclose(f);
	return rc;
}

static long sb_status_kib(pid_t pid, const char *key)
{
	char path[64], line[256];
	long v = -1;
	size_t k = strlen(key);
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, key, k) && line[k] == ':')
			v = atol(line + k + 1);
	fclose(f);
	return v;
}

static volatile sig_atomic_t sb_stop;
static void sb_on_term(int sig) { (void)sig; sb_stop = 1; }

static int sb_rss(int argc, char **argv)
{
	if (argc < 2)
		sb_die("%s", "usage: stillbench rss PID OUT [--ms N]");
	pid_t pid = (pid_t)atol(argv[0]);
	int ms = atoi(sb_opt(argc, argv, "--ms", "10"));
	long peak = 0, child_peak = 0, child_anon = 0, samples = 0;
	signal(SIGTERM, sb_on_term);
	signal(SIGINT, sb_on_term);
	while (!sb_stop) {
		long v = sb_status_kib(pid, "VmRSS");
		if (v < 0)
			break;
		if (v > peak)
			peak = v;
		/* The capture helper is a child of the daemon: find it by its parent. */
		DIR *d = opendir("/proc");
		struct dirent *e;
		while (d && (e = readdir(d))) {
			if (e->d_name[0] < '1' || e->d_name[0] > '9')
				continue;
			char path[300], buf[512];
			snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
			FILE *f = fopen(path, "r");
			if (!f)
				continue;
			size_t got = fread(buf, 1, sizeof buf - 1, f);
			fclose(f);
			buf[got] = 0;
			char *rp = strrchr(buf, ')');
			int ppid = 0;
			if (rp && sscanf(rp + 2, "%*c %d", &ppid) == 1 && ppid == pid) {
				long c = sb_status_kib((pid_t)atol(e->d_name), "VmHWM");
				if (c > child_peak)
					child_peak = c;
				/* Its own memory, without the file pages it maps (RssFile). */
				c = sb_status_kib((pid_t)atol(e->d_name), "RssAnon");
				if (c > child_anon)
					child_anon = c;
			}
		}
		if (d)
			closedir(d);
		samples++;
		struct timespec ts = { 0, (long)ms * 1000000L };
		nanosleep(&ts, NULL);
	}
	long hwm = sb_status_kib(pid, "VmHWM");
	FILE *f = fopen(argv[1], "w");
	if (!f)
		sb_die("cannot write %s", argv[1]);
	fprintf(f, "rss_peak_kib=%ld hwm_kib=%ld child_peak_kib=%ld child_anon_peak_kib=%ld "
		"samples=%ld\n", peak, hwm, child_peak, child_anon, samples);
	fclose(f);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: stillbench sqlw|sqlfill|fill|read|tree|meta|hashmem|hashtree|rwcopy|cfrcopy|dbdelta|cptree|run|rss ...\n");
		return 2;
	}
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = { { "sqlw", sb_sqlw }, { "sqlfill", sb_sqlfill }, { "fill", sb_fill },
		     { "read", sb_read }, { "tree", sb_tree }, { "meta", sb_meta },
		     { "run", sb_run }, { "rss", sb_rss }, { "hashmem", sb_hashmem },
		     { "hashtree", sb_hashtree }, { "rwcopy", sb_rwcopy },
		     { "cfrcopy", sb_cfrcopy }, { "dbdelta", sb_dbdelta }, { "cptree", sb_cptree } };
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn(argc - 2, argv + 2);
	fprintf(stderr, "stillbench: unknown command %s\n", argv[1]);
	return 2;
}
