/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for hnsw.c: every complete persist of a real-format segment passes, and copies
 * mixing two persists are found torn wherever the format can tell. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hnsw.h"
#include "../torture/hnswgen.h"

#define BIT(f) (1u << (f))

static char base[64];
static int basefd = -1;

static int rm_one(const char *p, const struct stat *s, int flag, struct FTW *f)
{
	(void)s, (void)flag, (void)f;
	return remove(p) < 0 && errno != ENOENT ? -1 : 0;
}

static void setup(void)
{
	snprintf(base, sizeof base, "/tmp/stillfs-ut-hv-XXXXXX");
	cr_assert_not_null(mkdtemp(base));
	basefd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(basefd, 0);
}

static void teardown(void)
{
	if (basefd >= 0)
		close(basefd);
	basefd = -1;
	nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(hnsw, .init = setup, .fini = teardown);

static int subdir(const char *name)
{
	int fd;

	cr_assert(mkdirat(basefd, name, 0755) == 0 || errno == EEXIST);
	fd = openat(basefd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	return fd;
}

static void copy_file(int from, int to, const char *name)
{
	char buf[65536];
	ssize_t n;
	int in = openat(from, name, O_RDONLY | O_CLOEXEC), out;

	unlinkat(to, name, 0);
	if (in < 0 && errno == ENOENT)
		return;
	cr_assert_geq(in, 0);
	out = openat(to, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	cr_assert_geq(out, 0);
	while ((n = read(in, buf, sizeof buf)) > 0)
		cr_assert_eq(write(out, buf, (size_t)n), n);
	cr_assert_eq(n, 0);
	close(in);
	close(out);
}

/* The files of one persist, as a quiet copy would see them. */
static int snap(int live, const char *name)
{
	int fd = subdir(name);
	for (int f = 0; f < HV_NFILES; f++)
		copy_file(live, fd, hv_file_names[f]);
	return fd;
}

static int check(int dirfd, char *why, size_t len)
{
	int rc = hv_check(dirfd, why, len);
	cr_assert_geq(rc, 0, "hv_check failed: %s", strerror(-rc));
	return rc;
}

/* Every mix of the two persists' files: the files in `mask` from the newer one. Masks in
 * `blind` are mixes the format cannot tell from a whole persist; all others must be torn. */
static void mixes(int older, int newer, const unsigned *blind, size_t nblind)
{
	char why[256], name[32];

	cr_assert_eq(check(older, why, sizeof why), 0, "older persist: %s", why);
	cr_assert_eq(check(newer, why, sizeof why), 0, "newer persist: %s", why);
	for (unsigned mask = 1; mask < BIT(HV_NFILES) - 1; mask++) {
		int expect = 1, fd;
		for (size_t i = 0; i < nblind; i++)
			if (blind[i] == mask)
				expect = 0;
		snprintf(name, sizeof name, "mix-%02u", mask);
		fd = subdir(name);
		for (int f = 0; f < HV_NFILES; f++)
			copy_file(mask & BIT(f) ? newer : older, fd, hv_file_names[f]);
		cr_expect_eq(check(fd, why, sizeof why), expect, "mix %#x (newer: %s%s%s%s%s): %s",
			     mask, mask & 1 ? "header " : "", mask & 2 ? "data_level0 " : "",
			     mask & 4 ? "length " : "", mask & 8 ? "link_lists " : "",
			     mask & 16 ? "pickle" : "", why[0] ? why : "consistent");
		close(fd);
	}
}

static int live_index(struct hg_index *x, uint64_t capacity)
{
	int fd = subdir("live");
	cr_assert_eq(hg_create(x, fd, 8, 16, capacity, 42), 0);
	return fd;
}

static void add_persist(struct hg_index *x, uint64_t n)
{
	cr_assert_eq(hg_ensure(x, n), 0);
	cr_assert_eq(hg_add(x, n), 0);
	cr_assert_eq(hg_persist(x), 0);
}

/* length.bin is sized at capacity and holds nothing to check an entry against (its floats are
 * uninitialized outside the cosine space), so a length.bin from the other persist is invisible:
 * with the rest older, harmless; with the rest newer, the new elements read back length 0. */
#define ALL_BUT(f) ((BIT(HV_NFILES) - 1) & ~BIT(f))
static const unsigned blind_length[] = { BIT(HV_LENGTH), ALL_BUT(HV_LENGTH) };

Test(hnsw, every_complete_persist_is_consistent)
{
	struct hg_index x;
	char why[256];
	int live = live_index(&x, 100);

	cr_assert_eq(check(live, why, sizeof why), 0, "fresh index: %s", why);
	/* One element (no links yet), growth through several resizes, deletions. */
	add_persist(&x, 1);
	cr_assert_eq(check(live, why, sizeof why), 0, "one element: %s", why);
	for (int round = 0; round < 30; round++) {
		add_persist(&x, 1 + (uint64_t)(round * 7 % 23));
		if (round % 5 == 4) {
			cr_assert_eq(hg_delete(&x, (uint64_t)round * 3 % x.count), 0);
			cr_assert_eq(hg_persist(&x), 0);
		}
		cr_assert_eq(check(live, why, sizeof why), 0, "round %d (%llu elements): %s", round,
			     (unsigned long long)x.count, why);
	}
	cr_assert_gt(x.capacity, 100, "no resize happened");
	hg_close(&x);
	close(live);
}

Test(hnsw, first_persist_after_init)
{
	struct hg_index x;
	int live = live_index(&x, 1000);
	int older = snap(live, "old");
	/* A header that still counts zero elements reads nothing of the other index files. */
	const unsigned blind[] = { BIT(HV_DATA_LEVEL0), BIT(HV_LENGTH),
				   BIT(HV_DATA_LEVEL0) | BIT(HV_LENGTH), ALL_BUT(HV_LENGTH) };

	add_persist(&x, 30);
	mixes(older, snap(live, "new"), blind, 4);
	hg_close(&x);
}

Test(hnsw, insert_batch)
{
	struct hg_index x;
	int live = live_index(&x, 1000), older;

	add_persist(&x, 200);
	older = snap(live, "old");
	add_persist(&x, 50);
	mixes(older, snap(live, "new"), blind_length, 2);
	hg_close(&x);
}

Test(hnsw, single_insert)
{
	struct hg_index x;
	int live = live_index(&x, 1000), older;

	add_persist(&x, 40);
	older = snap(live, "old");
	add_persist(&x, 1);
	mixes(older, snap(live, "new"), blind_length, 2);
	hg_close(&x);
}

Test(hnsw, filling_to_capacity)
{
	struct hg_index x;
	int live = live_index(&x, 100), older;

	add_persist(&x, 90);
	older = snap(live, "old");
	add_persist(&x, 10);
	cr_assert_eq(x.count, x.capacity);
	mixes(older, snap(live, "new"), blind_length, 2);
	hg_close(&x);
}

Test(hnsw, insert_past_a_resize)
{
	struct hg_index x;
	struct stat a, b;
	int live = live_index(&x, 100), older, newer;

	add_persist(&x, 90);
	older = snap(live, "old");
	add_persist(&x, 40);
	newer = snap(live, "new");
	cr_assert_gt(x.capacity, 100);
	/* Resizing does not touch the files; slots past the old capacity extend them. */
	cr_assert_eq(fstatat(older, "data_level0.bin", &a, 0), 0);
	cr_assert_eq(fstatat(newer, "data_level0.bin", &b, 0), 0);
	cr_assert_eq(a.st_size, (off_t)(100 * x.per_element));
	cr_assert_eq(b.st_size, (off_t)(130 * x.per_element));
	/* The older length.bin is now too short for the newer header. */
	mixes(older, newer, blind_length, 1);
	hg_close(&x);
}

/* A persist that only marks deletions rewrites header.bin and link_lists.bin byte for byte and
 * keeps every count: its mixes are all undetectable (the test pins that limit down). */
Test(hnsw, delete_only_persist_is_undetectable)
{
	struct hg_index x;
	const unsigned all[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,
				 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30 };
	int live = live_index(&x, 1000), older;

	add_persist(&x, 100);
	older = snap(live, "old");
	for (int i = 0; i < 5; i++)
		cr_assert_eq(hg_delete(&x, (uint64_t)i * 17), 0);
	cr_assert_eq(hg_persist(&x), 0);
	mixes(older, snap(live, "new"), all, 30);
	hg_close(&x);
}

Test(hnsw, pickle_caught_inside_its_rewrite)
{
	struct hg_index x;
	char why[256];
	struct stat st;
	int live = live_index(&x, 1000), fd;

	add_persist(&x, 2000);  /* a pickle of several frames */
	fd = snap(live, "cut");
	cr_assert_eq(fstatat(fd, "index_metadata.pickle", &st, 0), 0);
	cr_assert_gt(st.st_size, 65536);
	cr_assert_eq(check(fd, why, sizeof why), 0, "%s", why);
	for (off_t len = st.st_size - 1; len > 0; len -= 8192) {
		int p = openat(fd, "index_metadata.pickle", O_WRONLY | O_CLOEXEC);
		cr_assert_eq(ftruncate(p, len), 0);
		close(p);
		cr_expect_eq(check(fd, why, sizeof why), 1, "pickle cut at %lld passed",
			     (long long)len);
	}
	close(openat(fd, "index_metadata.pickle", O_WRONLY | O_TRUNC | O_CLOEXEC));
	cr_assert_eq(check(fd, why, sizeof why), 1);
	cr_assert(strstr(why, "pickle"), "%s", why);
	hg_close(&x);
}

Test(hnsw, corrupt_header_fields)
{
	struct hg_index x;
	char why[256];
	/* offset of: max_elements, size_per_element, label_offset, maxlevel, enterpoint, maxM0 */
	const off_t field[] = { 12, 28, 36, 52, 56, 68 };
	int live = live_index(&x, 1000), fd;

	add_persist(&x, 120);
	fd = snap(live, "bad");
	for (size_t i = 0; i < sizeof field / sizeof field[0]; i++) {
		uint8_t b, flip;
		int h = openat(fd, "header.bin", O_RDWR | O_CLOEXEC);
		cr_assert_eq(pread(h, &b, 1, field[i]), 1);
		flip = b ^ 0x40;
		cr_assert_eq(pwrite(h, &flip, 1, field[i]), 1);
		cr_expect_eq(check(fd, why, sizeof why), field[i] == 12 ? 0 : 1,
			     "header byte %lld: %s", (long long)field[i], why);
		cr_assert_eq(pwrite(h, &b, 1, field[i]), 1);
		close(h);
	}
	cr_assert_eq(check(fd, why, sizeof why), 0, "%s", why);
	hg_close(&x);
}

Test(hnsw, is_segment)
{
	struct hg_index x;
	int live = live_index(&x, 100), other = subdir("other");

	cr_assert_eq(hv_is_segment(live), 1);
	cr_assert_eq(hv_is_segment(other), 0);
	cr_assert_eq(symlinkat("../live/header.bin", other, "header.bin"), 0);
	for (int f = HV_DATA_LEVEL0; f < HV_PICKLE; f++)
		copy_file(live, other, hv_file_names[f]);
	cr_assert_eq(hv_is_segment(other), 0, "a symlinked file counts");
	cr_assert_eq(hv_check(other, NULL, 0), -ELOOP);
	hg_close(&x);
}

Test(hnsw, mtime_order)
{
	struct timespec mt[HV_NFILES] = { { 10, 0 }, { 10, 5 }, { 10, 5 }, { 11, 0 }, { 12, 0 } };

	cr_assert_eq(hv_order_ok(mt), 1);
	mt[HV_PICKLE] = (struct timespec){ 0, 0 };
	cr_assert_eq(hv_order_ok(mt), 1, "a missing pickle is not out of order");
	mt[HV_HEADER] = (struct timespec){ 10, 6 };
	cr_assert_eq(hv_order_ok(mt), 0, "header newer than data_level0");
	mt[HV_HEADER] = (struct timespec){ 10, 0 };
	mt[HV_PICKLE] = (struct timespec){ 10, 999 };
	cr_assert_eq(hv_order_ok(mt), 0, "pickle older than link_lists");
}
