/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for copy.c: hole-keeping copies, the "sha256-1m" digest (recomputed here from
 * its definition with sha256() alone), path escaping, and cp_rmtree. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/capability.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "copy.h"
#include "sha256.h"

#define MiB ((uint64_t)1 << 20)

/* ---- fixture ---------------------------------------------------------------------------- */

static char base[64];
static int basefd = -1;

static int rm_one(const char *p, const struct stat *s, int flag, struct FTW *f)
{
	(void)s, (void)f;
	if (flag == FTW_DP)
		chmod(p, 0700);
	return remove(p) < 0 && errno != ENOENT ? -1 : 0;
}

static void setup(void)
{
	snprintf(base, sizeof base, "/tmp/stillfs-ut-copy-XXXXXX");
	cr_assert_not_null(mkdtemp(base));
	basefd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(basefd, 0);
}

static void raise_caps(void);

static void teardown(void)
{
	raise_caps(); /* a test may have dropped some; cleaning up needs them */
	if (basefd >= 0)
		close(basefd);
	basefd = -1;
	/* Independent of cp_rmtree, which is under test here. */
	nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(copy, .init = setup, .fini = teardown, .timeout = 30);

/* ---- helpers ---------------------------------------------------------------------------- */

/* Fixed seed: failures must reproduce. */
static uint64_t rng_state = 0x2545f4914f6cdd1dULL;

static void fill_random(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		rng_state ^= rng_state << 13;
		rng_state ^= rng_state >> 7;
		rng_state ^= rng_state << 17;
		p[i] = (uint8_t)(rng_state >> 32);
	}
}

static int make_file(const char *name)
{
	int fd = openat(basefd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	cr_assert_geq(fd, 0, "create %s: %s", name, strerror(errno));
	return fd;
}

static void pwrite_all(int fd, const void *p, size_t n, off_t off)
{
	cr_assert_eq(pwrite(fd, p, n, off), (ssize_t)n, "pwrite: %s", strerror(errno));
}

static void pread_all(int fd, void *p, size_t n, off_t off)
{
	cr_assert_eq(pread(fd, p, n, off), (ssize_t)n, "pread at %lld", (long long)off);
}

static uint64_t fd_size(int fd)
{
	struct stat st;
	cr_assert_eq(fstat(fd, &st), 0);
	return (uint64_t)st.st_size;
}

static uint64_t fd_alloc(int fd)
{
	struct stat st;
	cr_assert_eq(fstat(fd, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

/* The documented digest, computed from its definition: SHA-256 of the content up to 1 MiB,
 * else SHA-256 over the SHA-256 of every 1 MiB block (the last one possibly short). Blocks
 * that SEEK_DATA says are all hole are hashed as zeros without reading them, so a 1 GiB
 * sparse file costs little here; that is a shortcut of the test, not of the definition. */
static void expected_digest(int fd, uint8_t out[32])
{
	uint64_t size = fd_size(fd);
	uint8_t *buf = malloc(MiB), *zeros = calloc(1, MiB);
	cr_assert(buf && zeros);
	if (size <= MiB) {
		pread_all(fd, buf, (size_t)size, 0);
		sha256(buf, (size_t)size, out);
		free(buf);
		free(zeros);
		return;
	}
	struct sha256 outer;
	uint8_t zero_block[32];
	sha256(zeros, MiB, zero_block);
	sha256_init(&outer);
	for (uint64_t off = 0; off < size; off += MiB) {
		size_t n = (size_t)(size - off < MiB ? size - off : MiB);
		uint8_t d[32];
		off_t data = lseek(fd, (off_t)off, SEEK_DATA);
		if ((data < 0 || (uint64_t)data >= off + n) && n == MiB) {
			memcpy(d, zero_block, 32);
		} else if (data < 0 || (uint64_t)data >= off + n) {
			sha256(zeros, n, d);
		} else {
			pread_all(fd, buf, n, (off_t)off);
			sha256(buf, n, d);
		}
		sha256_update(&outer, d, 32);
	}
	sha256_final(&outer, out);
	free(buf);
	free(zeros);
}

/* Compare two files of equal size. Ranges that are a hole in both read as zeros in both, so
 * only the data segments of either file need reading. */
static void assert_same_content(int a, int b)
{
	uint64_t size = fd_size(a);
	cr_assert_eq(fd_size(b), size, "sizes differ");
	uint8_t *x = malloc(MiB), *y = malloc(MiB);
	cr_assert(x && y);
	uint64_t off = 0;
	while (off < size) {
		off_t da = lseek(a, (off_t)off, SEEK_DATA), db = lseek(b, (off_t)off, SEEK_DATA);
		uint64_t next = size;
		if (da >= 0 && (uint64_t)da < next)
			next = (uint64_t)da;
		if (db >= 0 && (uint64_t)db < next)
			next = (uint64_t)db;
		if (next >= size)
			break;
		size_t n = (size_t)(size - next < MiB ? size - next : MiB);
		pread_all(a, x, n, (off_t)next);
		pread_all(b, y, n, (off_t)next);
		cr_assert_arr_eq(x, y, n, "content differs in [%llu, +%zu)", (unsigned long long)next, n);
		off = next + n;
	}
	free(x);
	free(y);
}

static int is_hole_at(int fd, uint64_t off)
{
	off_t h = lseek(fd, (off_t)off, SEEK_HOLE);
	return h >= 0 && (uint64_t)h == off;
}

/* ---- cp_file: holes, content, digest ------------------------------------------------------ */

Test(copy, sparse_1gib_stays_sparse)
{
	const uint64_t size = (uint64_t)1 << 30;
	static const uint64_t at[] = { 0, 300 * MiB + 123, ((uint64_t)1 << 30) - 4096 };
	uint8_t chunk[4096];
	int src = make_file("src"), dst = make_file("dst");
	cr_assert_eq(ftruncate(src, (off_t)size), 0);
	for (unsigned i = 0; i < 3; i++) {
		fill_random(chunk, sizeof chunk);
		pwrite_all(src, chunk, sizeof chunk, (off_t)at[i]);
	}
	cr_assert_lt(fd_alloc(src), 1 * MiB, "this filesystem does not keep holes");

	struct cp_result r;
	cr_assert_eq(cp_file(src, dst, 1, &r), 0);
	cr_assert_eq(r.size, size);
	cr_assert_eq(fd_size(dst), size);
	/* Granularity may be up to a 1 MiB block per data region, never the whole file. */
	cr_assert_leq(fd_alloc(dst), 8 * MiB, "copy allocates %llu bytes",
		      (unsigned long long)fd_alloc(dst));
	cr_assert_leq(r.written, 8 * MiB);
	cr_assert(is_hole_at(dst, 512 * MiB), "middle of the copy is not a hole");
	assert_same_content(src, dst);

	uint8_t want[32];
	expected_digest(src, want);
	cr_assert_arr_eq(r.digest, want, 32, "digest is not the sha256-1m block tree");
	close(src);
	close(dst);
}

static void check_digest_of_size(size_t size)
{
	char name[32];
	snprintf(name, sizeof name, "f%zu", size);
	uint8_t *data = malloc(size ? size : 1);
	cr_assert_not_null(data);
	fill_random(data, size);
	int fd = make_file(name);
	if (size)
		pwrite_all(fd, data, size, 0);

	uint8_t want[32];
	if (size <= MiB) {
		sha256(data, size, want); /* small files: plain SHA-256 of the content */
	} else {
		struct sha256 outer;
		sha256_init(&outer);
		for (size_t off = 0; off < size; off += MiB) {
			uint8_t d[32];
			sha256(data + off, size - off < MiB ? size - off : MiB, d);
			sha256_update(&outer, d, 32);
		}
		sha256_final(&outer, want);
	}

	struct cp_result r;
	cr_assert_eq(cp_digest_fd(fd, &r), 0);
	cr_assert_eq(r.size, size);
	cr_assert_arr_eq(r.digest, want, 32, "digest-only, size %zu", size);

	snprintf(name, sizeof name, "c%zu", size);
	int dst = make_file(name);
	cr_assert_eq(cp_file(fd, dst, 1, &r), 0);
	cr_assert_eq(r.size, size);
	cr_assert_arr_eq(r.digest, want, 32, "copy, size %zu", size);
	cr_assert_eq(memcmp(r.head, data, size < 16 ? size : 16), 0, "head bytes");
	assert_same_content(fd, dst);
	close(dst);
	close(fd);
	free(data);
}

Test(copy, digest_small_files_is_plain_sha256)
{
	static const size_t sizes[] = { 0, 1, 55, 64, 1000, 65536, MiB - 1, MiB };
	for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
		check_digest_of_size(sizes[i]);
	/* Pin the empty-file digest: it must be SHA-256(""), not of an empty block list. */
	int fd = make_file("empty");
	struct cp_result r;
	uint8_t want[32];
	cr_assert_eq(sha256_from_hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
				     want), 0);
	cr_assert_eq(cp_digest_fd(fd, &r), 0);
	cr_assert_arr_eq(r.digest, want, 32);
	close(fd);
}

Test(copy, digest_large_files_is_block_tree)
{
	/* Over 2 MiB without holes, cp_digest_fd hashes 16 blocks at a time on two threads: one
	 * batch, a batch and a byte, several batches and a short block. */
	static const size_t sizes[] = { MiB + 1, 2 * MiB, 3 * MiB + MiB / 2, 16 * MiB, 16 * MiB + 1,
					49 * MiB + 123 };
	for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
		check_digest_of_size(sizes[i]);
}

/* Written zeros (not holes) in the source: the copy stores them as holes, the digest is the
 * same as for the bytes, and a zero tail still gives the right size. */
Test(copy, zero_blocks_become_holes)
{
	const uint64_t size = 6 * MiB;
	uint8_t *buf = malloc(size);
	cr_assert_not_null(buf);
	memset(buf, 0, size);
	fill_random(buf, MiB);                   /* block 0: data */
	fill_random(buf + 4 * MiB + 10, 100);    /* block 4: a little data */
	int src = make_file("src"), dst = make_file("dst");
	pwrite_all(src, buf, size, 0);           /* blocks 1-3 and 5 are written zeros */
	cr_assert_eq(fsync(src), 0);
	cr_assert_geq(fd_alloc(src), size, "source zeros should be allocated");

	struct cp_result r;
	cr_assert_eq(cp_file(src, dst, 1, &r), 0);
	cr_assert_eq(r.size, size);
	cr_assert_eq(fd_size(dst), size);
	cr_assert_leq(r.written, 2 * MiB, "zero blocks were written: %llu bytes",
		      (unsigned long long)r.written);
	cr_assert_leq(fd_alloc(dst), 2 * MiB + 64 * 1024);
	cr_assert(is_hole_at(dst, 1 * MiB), "block 1 is not a hole");
	cr_assert(is_hole_at(dst, 5 * MiB), "the zero tail is not a hole");
	assert_same_content(src, dst);

	uint8_t want[32];
	expected_digest(src, want);
	cr_assert_arr_eq(r.digest, want, 32);
	/* The digest of the copy (mostly holes) must equal that of the source (written zeros). */
	struct cp_result r2;
	cr_assert_eq(cp_digest_fd(dst, &r2), 0);
	cr_assert_arr_eq(r2.digest, want, 32);
	close(src);
	close(dst);
	free(buf);
}

/* want_digest = 0 is the in-kernel path used for database copies; its result must be the
 * same file, holes included. */
Test(copy, no_digest_path_keeps_content_and_holes)
{
	const uint64_t size = 64 * MiB;
	uint8_t chunk[8192];
	int src = make_file("src"), dst = make_file("dst");
	cr_assert_eq(ftruncate(src, (off_t)size), 0);
	fill_random(chunk, sizeof chunk);
	pwrite_all(src, chunk, sizeof chunk, 0);
	pwrite_all(src, chunk, sizeof chunk, (off_t)(40 * MiB + 7));

	struct cp_result r;
	cr_assert_eq(cp_file(src, dst, 0, &r), 0);
	cr_assert_eq(r.size, size);
	cr_assert_eq(fd_size(dst), size);
	cr_assert_leq(fd_alloc(dst), 4 * MiB);
	cr_assert(is_hole_at(dst, 20 * MiB));
	cr_assert_eq(memcmp(r.head, chunk, 16), 0);
	assert_same_content(src, dst);
	close(src);
	close(dst);
}

struct shrinker {
	int fd;
	const uint8_t *data;
	uint64_t len, keep;
	volatile int stop;
};

/* Cut the file to `keep` bytes and put the rest back, as fast as it can. */
static void *shrink_loop(void *arg)
{
	struct shrinker *s = arg;
	while (!s->stop) {
		if (ftruncate(s->fd, (off_t)s->keep) < 0 ||
		    pwrite(s->fd, s->data + s->keep, s->len - s->keep, (off_t)s->keep) < 0)
			break;
	}
	return NULL;
}

Test(copy, source_shrinking_during_copy)
{
	/* cp_file must stop at the end it finds and report what it stored: the size it returns
	 * is the copy's, and the digest is the copy's digest, whatever the source did meanwhile.
	 * Another thread cuts the source short and restores it as fast as it can; the copies
	 * must see it short at least a few times within the time allowed. */
	const uint64_t len = 24 * MiB, keep = 5 * MiB + 1234;
	uint8_t *data = malloc(len);
	cr_assert_not_null(data);
	fill_random(data, len);
	int src = make_file("src");
	pwrite_all(src, data, len, 0);
	struct shrinker s = { .fd = openat(basefd, "src", O_RDWR | O_CLOEXEC), .data = data,
			      .len = len, .keep = keep };
	cr_assert_geq(s.fd, 0);
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, shrink_loop, &s), 0);
	int shorter = 0, runs = 0;
	time_t t0 = time(NULL);
	while (shorter < 5 && time(NULL) - t0 < 20) {
		struct cp_result r;
		uint8_t want[32];
		int dst = make_file("dst");
		cr_assert_eq(cp_file(src, dst, 1, &r), 0);
		cr_assert_eq(r.size, fd_size(dst), "reported %llu bytes, stored %llu",
			     (unsigned long long)r.size, (unsigned long long)fd_size(dst));
		cr_assert_leq(r.size, len);
		expected_digest(dst, want);
		cr_assert_arr_eq(r.digest, want, 32, "the digest is not the copy's (%llu bytes)",
				 (unsigned long long)r.size);
		close(dst);
		shorter += r.size < len;
		runs++;
	}
	s.stop = 1;
	pthread_join(t, NULL);
	close(s.fd);
	close(src);
	free(data);
	cr_assert_geq(shorter, 5, "only %d of %d copies saw the source short", shorter, runs);
}

/* ---- cp_file_deferred: the digest left to the hashing threads ----------------------------- */

static int count_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	cr_assert_not_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* Copy src deferred into a new file `name` through a descriptor (write-only unless rdwr) that
 * is closed at once; finish_deferred copies it with cp_file too, into `name`.ref: the digest
 * and the bytes stored must be the same both ways. The pending copy is returned (NULL if it was
 * done at once); *r is completed by finish_deferred. */
static struct cp_pending *start_deferred(int src, const char *name, int rdwr,
					 struct cp_result *r)
{
	struct cp_pending *p = NULL;
	int dst = make_file(name);
	if (!rdwr) {
		int wdst = openat(basefd, name, O_WRONLY | O_CLOEXEC);
		cr_assert_geq(wdst, 0);
		close(dst);
		dst = wdst;
	}
	cr_assert_eq(cp_file_deferred(src, dst, r, &p), 0, "deferred copy to %s", name);
	close(dst);
	cr_assert_eq(r->size, fd_size(src));
	return p;
}

static void finish_deferred(int src, const char *name, struct cp_pending *p, struct cp_result *r)
{
	char ref[64];
	struct cp_result rr;
	uint8_t want[32];
	if (p)
		cr_assert_eq(cp_pending_wait(p, r), 0);
	snprintf(ref, sizeof ref, "%s.ref", name);
	int dst = make_file(ref);
	cr_assert_eq(cp_file(src, dst, 1, &rr), 0);
	close(dst);
	expected_digest(src, want);
	cr_assert_arr_eq(rr.digest, want, 32, "%s: cp_file digest", name);
	cr_assert_arr_eq(r->digest, rr.digest, 32, "%s: deferred digest differs from cp_file's", name);
	cr_assert_eq(r->written, rr.written, "%s: stored %llu bytes, cp_file %llu", name,
		     (unsigned long long)r->written, (unsigned long long)rr.written);
	int copy = openat(basefd, name, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(copy, 0);
	assert_same_content(src, copy);
	close(copy);
}

static void check_deferred(int src, const char *name)
{
	struct cp_result r;
	struct cp_pending *p = start_deferred(src, name, 0, &r);
	finish_deferred(src, name, p, &r);
}

Test(copy, deferred_small_files)
{
	int fds = count_fds();
	int empty = make_file("empty");
	check_deferred(empty, "empty.copy");
	int small = make_file("small");
	uint8_t buf[100];
	fill_random(buf, sizeof buf);
	pwrite_all(small, buf, sizeof buf, 0);
	check_deferred(small, "small.copy");
	close(empty);
	close(small);
	cr_assert_eq(count_fds(), fds, "descriptors left open");
}

/* 3.5 MiB: data with zero pages in it, a hole, a block of written zeros, a short last block
 * ending in zeros. The copy must keep the hole and punch the zero pages, as cp_file does. */
static int make_holey(const char *name)
{
	const size_t size = 3 * MiB + MiB / 2;
	uint8_t *buf = calloc(1, size);
	cr_assert_not_null(buf);
	fill_random(buf, MiB);
	memset(buf + 3 * 4096, 0, 3 * 4096);     /* zero pages inside block 0 */
	fill_random(buf + 3 * MiB, 100 * 1024);   /* block 3: data, then zeros */
	int fd = make_file(name);
	cr_assert_eq(ftruncate(fd, (off_t)size), 0);
	pwrite_all(fd, buf, MiB, 0);
	pwrite_all(fd, buf + 2 * MiB, MiB, (off_t)(2 * MiB)); /* block 2: written zeros */
	pwrite_all(fd, buf + 3 * MiB, MiB / 2, (off_t)(3 * MiB));
	cr_assert_eq(fsync(fd), 0);
	free(buf);
	return fd;
}

Test(copy, deferred_holes_and_zero_pages)
{
	int fds = count_fds();
	int src = make_holey("holey");
	cr_assert(is_hole_at(src, MiB), "this filesystem does not keep holes");
	check_deferred(src, "holey.copy");
	int copy = openat(basefd, "holey.copy", O_RDONLY | O_CLOEXEC);
	cr_assert_geq(copy, 0);
	cr_assert(is_hole_at(copy, MiB), "the hole was filled");
	cr_assert(is_hole_at(copy, 2 * MiB), "the zero block was not punched");
	cr_assert(is_hole_at(copy, 3 * 4096), "zero pages in block 0 were not punched");
	cr_assert_leq(fd_alloc(copy), MiB + 128 * 1024);
	close(copy);
	close(src);
	cr_assert_eq(count_fds(), fds, "descriptors left open");
}

/* More copies pending at once than the queue holds (so the copying thread must hash too), of
 * sizes that share the vector lanes between files, all waited for only at the end. */
#define DEFERRED_FILES 72
Test(copy, deferred_many_pending)
{
	static const size_t sizes[] = { 64 * 1024, 200 * 1024, MiB, 2 * MiB + 7, 5 * MiB + 4096 };
	struct cp_pending *p[DEFERRED_FILES];
	struct cp_result r[DEFERRED_FILES];
	int src[DEFERRED_FILES];
	char name[DEFERRED_FILES][32];
	uint8_t *buf = malloc(6 * MiB);
	cr_assert_not_null(buf);
	int fds = count_fds();
	for (int i = 0; i < DEFERRED_FILES; i++) {
		size_t size = sizes[i % 5];
		snprintf(name[i], sizeof name[i], "many%d", i);
		src[i] = make_file(name[i]);
		fill_random(buf, size);
		if (i % 3 == 0)
			memset(buf + size / 2, 0, 8192); /* zero pages to punch */
		pwrite_all(src[i], buf, size, 0);
	}
	for (int i = 0; i < DEFERRED_FILES; i++) {
		char copy[40];
		snprintf(copy, sizeof copy, "%s.copy", name[i]);
		p[i] = start_deferred(src[i], copy, i % 2, &r[i]);
	}
	for (int i = 0; i < DEFERRED_FILES; i++) {
		char copy[40];
		snprintf(copy, sizeof copy, "%s.copy", name[i]);
		finish_deferred(src[i], copy, p[i], &r[i]);
		close(src[i]);
	}
	free(buf);
	cr_assert_eq(count_fds(), fds, "descriptors left open");
}

/* A pending copy given up, between others that are not: theirs are unaffected, nothing is
 * left open, and the copy stays as copied. */
Test(copy, deferred_discard)
{
	const size_t size = 12 * MiB;
	uint8_t *buf = malloc(size);
	cr_assert_not_null(buf);
	int fds = count_fds();
	int src[3];
	struct cp_pending *p[3];
	struct cp_result r[3];
	static const char *names[] = { "d0", "d1", "d2" }, *copies[] = { "d0.copy", "d1.copy",
									     "d2.copy" };
	for (int i = 0; i < 3; i++) {
		src[i] = make_file(names[i]);
		fill_random(buf, size);
		pwrite_all(src[i], buf, size, 0);
	}
	for (int i = 0; i < 3; i++)
		p[i] = start_deferred(src[i], copies[i], 0, &r[i]);
	cr_assert_not_null(p[1], "a 12 MiB copy should be left pending");
	cp_pending_discard(p[1]);
	cp_pending_discard(NULL);
	finish_deferred(src[0], copies[0], p[0], &r[0]);
	finish_deferred(src[2], copies[2], p[2], &r[2]);
	int copy = openat(basefd, copies[1], O_RDONLY | O_CLOEXEC);
	cr_assert_geq(copy, 0);
	assert_same_content(src[1], copy);
	close(copy);
	/* Given up as soon as copied, before any block could be hashed. */
	struct cp_pending *q = start_deferred(src[1], "d1.again", 1, &r[1]);
	cp_pending_discard(q);
	for (int i = 0; i < 3; i++)
		close(src[i]);
	free(buf);
	cr_assert_eq(count_fds(), fds, "descriptors left open");
}

/* ---- escaping --------------------------------------------------------------------------- */

static void round_trip(const char *s)
{
	char *e = cp_escape(s);
	cr_assert_not_null(e);
	for (const unsigned char *p = (const unsigned char *)e; *p; p++)
		cr_assert(*p > ' ' && *p < 0x7f, "escaped form of a name holds byte 0x%02x", *p);
	char *u = cp_unescape(e);
	cr_assert_not_null(u, "cannot unescape \"%s\"", e);
	cr_assert_str_eq(u, s, "round trip through \"%s\"", e);
	free(e);
	free(u);
}

Test(copy, escape_round_trip)
{
	round_trip("");
	round_trip("plain/path.txt");
	round_trip("with space/and  two");
	round_trip("new\nline\r\tand tab");
	round_trip("100%/%41%%");
	round_trip("chroma.sqlite3-wal");
	round_trip("caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac");
	/* Every byte value a name can hold, 0x01..0xff. */
	char all[256];
	for (int i = 1; i < 256; i++)
		all[i - 1] = (char)i;
	all[255] = 0;
	round_trip(all);
	char hi[129];
	for (int i = 0; i < 128; i++)
		hi[i] = (char)(0x80 + i);
	hi[128] = 0;
	round_trip(hi);

	char *e = cp_escape("a b%\n\x80\xff");
	cr_assert_str_eq(e, "a%20b%25%0A%80%FF");
	free(e);
	char *u = cp_unescape("%2f%7E%c3%a9");
	cr_assert_str_eq(u, "/~\xc3\xa9", "lowercase hex must be accepted");
	free(u);
}

Test(copy, unescape_rejects_malformed)
{
	static const char *bad[] = { "%", "a%", "%4", "a%4", "%G0", "%0G", "%%", "%%41", "% 1",
				     "%00", "a%00b", "%-1", "%+1", "%x1" };
	for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char *u = cp_unescape(bad[i]);
		cr_assert_null(u, "\"%s\" unescaped to \"%s\"", bad[i], u ? u : "");
	}
}

/* ---- cp_rmtree -------------------------------------------------------------------------- */

static void mkdir_ok(const char *rel)
{
	cr_assert_eq(mkdirat(basefd, rel, 0700), 0, "mkdir %s: %s", rel, strerror(errno));
}

static void touch_ok(const char *rel, mode_t mode)
{
	int fd = openat(basefd, rel, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0, "create %s: %s", rel, strerror(errno));
	cr_assert_eq(write(fd, "x", 1), 1);
	fchmod(fd, mode);
	close(fd);
}

/* A tree whose directories become read-only once filled, with symlinks leading out of it:
 * to a directory, to a file, and a chain through a link inside the tree. */
static void build_rmtree_case(int unreadable_dir)
{
	mkdir_ok("outside");
	touch_ok("outside/keep", 0644);
	mkdir_ok("outside/sub");
	touch_ok("outside/sub/keep2", 0644);

	mkdir_ok("t");
	mkdir_ok("t/ro");
	mkdir_ok("t/ro/deeper");
	mkdir_ok("t/ro/empty");
	touch_ok("t/ro/f", 0444);
	touch_ok("t/ro/deeper/g", 0000);
	if (unreadable_dir) {
		mkdir_ok("t/none");
		touch_ok("t/none/h", 0600);
		cr_assert_eq(fchmodat(basefd, "t/none", 0000, 0), 0);
	}
	char target[128];
	snprintf(target, sizeof target, "%s/outside", base);
	cr_assert_eq(symlinkat(target, basefd, "t/ro/to-outside-dir"), 0);
	cr_assert_eq(symlinkat("../../outside/keep", basefd, "t/ro/to-outside-file"), 0);
	cr_assert_eq(symlinkat("../outside/sub", basefd, "t/rel-out"), 0);
	cr_assert_eq(symlinkat("ro", basefd, "t/to-ro"), 0);
	cr_assert_eq(symlinkat("dangling-nowhere", basefd, "t/dangling"), 0);
	cr_assert_eq(fchmodat(basefd, "t/ro/deeper", 0500, 0), 0);
	cr_assert_eq(fchmodat(basefd, "t/ro/empty", 0555, 0), 0);
	cr_assert_eq(fchmodat(basefd, "t/ro", 0555, 0), 0);
	cr_assert_eq(fchmodat(basefd, "t", 0500, 0), 0);
}

static void check_rmtree_result(void)
{
	struct stat st;
	cr_assert_eq(fstatat(basefd, "t", &st, AT_SYMLINK_NOFOLLOW), -1, "tree still there");
	cr_assert_eq(errno, ENOENT);
	cr_assert_eq(fstatat(basefd, "outside/keep", &st, 0), 0, "followed a link out of the tree");
	cr_assert_eq(fstatat(basefd, "outside/sub/keep2", &st, 0), 0,
		     "followed a relative link out of the tree");
}

Test(copy, rmtree_readonly_dirs_and_links_out)
{
	build_rmtree_case(1);
	cr_assert_eq(cp_rmtree(basefd, "t"), 0);
	check_rmtree_result();
	/* Gone already, a plain file, and a symlink to a directory (removed, not followed). */
	cr_assert_eq(cp_rmtree(basefd, "t"), 0);
	touch_ok("plain", 0444);
	cr_assert_eq(cp_rmtree(basefd, "plain"), 0);
	cr_assert_eq(faccessat(basefd, "plain", F_OK, AT_SYMLINK_NOFOLLOW), -1);
	cr_assert_eq(symlinkat("outside", basefd, "link-to-dir"), 0);
	cr_assert_eq(cp_rmtree(basefd, "link-to-dir"), 0);
	cr_assert_eq(faccessat(basefd, "link-to-dir", F_OK, AT_SYMLINK_NOFOLLOW), -1);
	cr_assert_eq(faccessat(basefd, "outside/keep", F_OK, 0), 0);
}

/* Drop the capabilities that let root ignore permission bits (this test process only:
 * capset(2) acts on the calling thread, and Criterion runs each test in its own process).
 * What remains is what an ordinary user running stillctl on their own files has. */
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

static void drop_dac_override(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct d[2];
	cr_assert_eq(syscall(SYS_capget, &h, d), 0);
	unsigned drop[] = { CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER };
	for (unsigned i = 0; i < 3; i++)
		d[drop[i] / 32].effective &= ~(1u << (drop[i] % 32));
	cr_assert_eq(syscall(SYS_capset, &h, d), 0, "capset: %s", strerror(errno));
	/* Prove it took: a 0000 directory we own must now be unreadable. */
	cr_assert_eq(mkdirat(basefd, "probe", 0), 0);
	int fd = openat(basefd, "probe", O_RDONLY | O_DIRECTORY);
	if (fd >= 0)
		close(fd);
	cr_assert_lt(fd, 0, "still privileged after capset");
	cr_assert_eq(unlinkat(basefd, "probe", AT_REMOVEDIR), 0);
}

/* The same tree as an unprivileged owner: read-only directories of one's own must not stop
 * the removal (a failed capture cleans its staging tree up with cp_rmtree, and the staging
 * tree carries the store's directory modes by then). No 0000 directory here: the engine
 * could not have read such a directory of the store without privilege anyway. */
Test(copy, rmtree_readonly_dirs_unprivileged)
{
	if (geteuid() != 0) {
		teardown(); /* Criterion does not run .fini for a skipped test */
		cr_skip_test("needs root to drop exactly the DAC capabilities");
	}
	build_rmtree_case(0);
	drop_dac_override();
	int rc = cp_rmtree(basefd, "t");
	cr_assert_eq(rc, 0, "cp_rmtree: %s", strerror(-rc));
	check_rmtree_result();
}
