/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for manifest.c: write, load back, look up; manifests that are malformed, cut
 * short, reordered, miscounted or changed are refused; and what verify makes of a copy. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "copy.h"
#include "manifest.h"
#include "sha256.h"
#include "verify.h"

static char base[64];
static int basefd = -1;

static int rm_one(const char *p, const struct stat *s, int flag, struct FTW *f)
{
	(void)s, (void)flag, (void)f;
	return remove(p) < 0 && errno != ENOENT ? -1 : 0;
}

static void setup(void)
{
	snprintf(base, sizeof base, "/tmp/stillfs-ut-mf-XXXXXX");
	cr_assert_not_null(mkdtemp(base));
	basefd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(basefd, 0);
	log_init("test_manifest");
	log_set_quiet(1);
}

static void teardown(void)
{
	if (basefd >= 0)
		close(basefd);
	basefd = -1;
	nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(manifest, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(verify, .init = setup, .fini = teardown, .timeout = 60);

static FILE *create(const char *name)
{
	int fd = openat(basefd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	cr_assert_geq(fd, 0, "%s: %s", name, strerror(errno));
	FILE *f = fdopen(fd, "w");
	cr_assert_not_null(f);
	return f;
}

static void write_bytes(const char *name, const char *p, size_t len)
{
	FILE *f = create(name);
	cr_assert_eq(fwrite(p, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
}

static void write_text(const char *name, const char *text)
{
	write_bytes(name, text, strlen(text));
}

static size_t read_text(const char *name, char *buf, size_t room)
{
	int fd = openat(basefd, name, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "%s: %s", name, strerror(errno));
	ssize_t n = read(fd, buf, room - 1);
	close(fd);
	cr_assert(n > 0 && (size_t)n < room - 1, "%s: %zd bytes", name, n);
	buf[n] = 0;
	return (size_t)n;
}

static struct cap_stats sample_stats(void)
{
	struct cap_stats st;
	memset(&st, 0, sizeof st);
	snprintf(st.id, sizeof st.id, "20250102T030405.678Z-0a1b2c3d");
	st.cut.tv_sec = 1735787045;
	st.cut.tv_nsec = 678901234;
	st.duration_s = 12.5;
	st.lock_max_s = 0.012345;
	st.bytes_copied = 9876543210123ULL;
	st.bytes_linked = 42;
	st.retries = 7;
	return st;
}

#define NSAMPLE 10
#define NBIG1 4 /* blocks of the two databases with block lines */
#define NBIG2 2

/* Every kind, with and without digest and identity, paths that need escaping, and two
 * databases of several blocks, whose digests their blocks add up to. Given out of order. */
static void sample_entries(struct mf_entry e[NSAMPLE])
{
	static char *paths[NSAMPLE] = {
		"seg", "seg/data_level0.bin", "chroma.sqlite3", "link to it",
		"we\nird %name\t\x01", "caf\xc3\xa9/\x80\xfe\xff", "a/..b/..c/.d", "x",
		"z/big2.sqlite3", "big.sqlite3",
	};
	static const char kinds[NSAMPLE] = { 'd', 'f', 's', 'l', 'f', 'f', 'f', 'f', 's', 's' };
	static uint8_t big1[NBIG1][32], big2[NBIG2][32];
	for (unsigned k = 0; k < NBIG1; k++)
		sha256(&k, sizeof k, big1[k]);
	for (unsigned k = 0; k < NBIG2; k++)
		sha256(paths[k], strlen(paths[k]), big2[k]);
	memset(e, 0, NSAMPLE * sizeof *e);
	for (unsigned i = 0; i < NSAMPLE; i++) {
		e[i].kind = kinds[i];
		e[i].mode = i == 0 ? 02755 : i == 7 ? 04711 : 0640 + i;
		e[i].uid = i == 5 ? 4294967294u : 1000 + i;
		e[i].gid = i == 5 ? 65534 : 2000 + i;
		e[i].size = i == 1 ? 5000000000ULL : 17 * i;
		e[i].mtime_ns = i == 6 ? -1500000000LL : 1735787045123456789LL + i;
		e[i].has_digest = kinds[i] != 'd' && i != 7;
		if (e[i].has_digest)
			sha256(paths[i], strlen(paths[i]), e[i].digest);
		e[i].ident = i == 1 ? "fd01.1234.5000000000.1735787045123456789.1735787045123456789" :
			     i == 2 ? "fd01.99.8192.1.2/fd01.100.4152.3.4" : NULL;
		e[i].path = paths[i];
	}
	e[8].size = NBIG2 * DD_BLOCK;
	e[8].blocks = big2;
	sha256(big2, sizeof big2, e[8].digest);
	e[9].size = (NBIG1 - 1) * DD_BLOCK + 5;
	e[9].blocks = big1;
	sha256(big1, sizeof big1, e[9].digest);
}

static void write_manifest(const char *name, struct mf *m)
{
	FILE *f = create(name);
	int rc = mf_write(f, m);
	cr_assert_eq(rc, 0, "mf_write: %s", strerror(-rc));
	cr_assert_eq(fclose(f), 0);
}

static void write_sample(const char *name)
{
	struct mf out = { .stats = sample_stats() };
	struct mf_entry e[NSAMPLE];
	sample_entries(e);
	for (unsigned i = 0; i < NSAMPLE; i++)
		cr_assert_eq(mf_add(&out, &e[i]), 0);
	write_manifest(name, &out);
	mf_free(&out);
}

/* mf_load of name: its result, with m->why checked to be set on failure. */
static int load(const char *name, struct mf *m)
{
	int rc = mf_load(basefd, name, m);
	if (rc) {
		cr_assert_eq(m->n, 0);
		cr_assert_null(m->e);
		cr_assert(m->why[0], "no reason given for %s", strerror(-rc));
	}
	return rc;
}

Test(manifest, round_trip)
{
	write_sample("m");
	struct mf m;
	int rc = load("m", &m);
	cr_assert_eq(rc, 0, "mf_load: %s", m.why);

	struct cap_stats want = sample_stats();
	cr_assert_str_eq(m.stats.id, want.id);
	cr_assert_eq(m.stats.cut.tv_sec, want.cut.tv_sec);
	cr_assert_eq(m.stats.cut.tv_nsec, want.cut.tv_nsec);
	cr_assert_float_eq(m.stats.duration_s, want.duration_s, 1e-6);
	cr_assert_float_eq(m.stats.lock_max_s, want.lock_max_s, 1e-6);
	cr_assert_eq(m.stats.files, 8, "files counts the f and s entries, not what stats said");
	cr_assert_eq(m.stats.bytes_copied, want.bytes_copied);
	cr_assert_eq(m.stats.bytes_linked, want.bytes_linked);
	cr_assert_eq(m.stats.retries, want.retries);

	struct mf_entry e[NSAMPLE];
	sample_entries(e);
	cr_assert_eq(m.n, NSAMPLE);
	for (size_t i = 1; i < m.n; i++)
		cr_assert_lt(strcmp(m.e[i - 1].path, m.e[i].path), 0, "not sorted at %zu", i);
	for (unsigned i = 0; i < NSAMPLE; i++) {
		const struct mf_entry *g = mf_find(&m, e[i].path);
		cr_assert_not_null(g, "entry %u", i);
		cr_assert_str_eq(g->path, e[i].path, "entry %u", i);
		cr_assert_eq(g->kind, e[i].kind, "entry %u", i);
		cr_assert_eq(g->mode, e[i].mode, "entry %u", i);
		cr_assert_eq(g->uid, e[i].uid, "entry %u", i);
		cr_assert_eq(g->gid, e[i].gid, "entry %u", i);
		cr_assert_eq(g->size, e[i].size, "entry %u", i);
		cr_assert_eq(g->mtime_ns, e[i].mtime_ns, "entry %u", i);
		cr_assert_eq(g->has_digest, e[i].has_digest, "entry %u", i);
		if (e[i].has_digest)
			cr_assert_arr_eq(g->digest, e[i].digest, 32, "entry %u", i);
		if (e[i].ident)
			cr_assert_str_eq(g->ident, e[i].ident, "entry %u", i);
		else
			cr_assert_null(g->ident, "entry %u", i);
		struct dd_blocks b;
		dd_init(&b);
		rc = mf_blocks_of(&m, e[i].path, &b);
		if (!e[i].blocks) {
			cr_assert_eq(rc, -ENOENT, "entry %u has blocks", i);
			continue;
		}
		cr_assert_eq(rc, 0, "entry %u: no blocks", i);
		cr_assert_eq(b.size, e[i].size);
		cr_assert(dd_all_valid(&b));
		cr_assert_arr_eq(b.d, e[i].blocks, b.n * 32, "entry %u", i);
		dd_free(&b);
	}
	cr_assert_null(mf_find(&m, "missing"));
	cr_assert_null(mf_find(&m, "se"));
	cr_assert_null(mf_find(&m, "seg/"));
	cr_assert_null(mf_find(&m, ""));
	struct dd_blocks b;
	dd_init(&b);
	cr_assert_eq(mf_blocks_of(&m, "missing", &b), -ENOENT);
	mf_free(&m);
	cr_assert_eq(m.n, 0);
}

static int keep_databases(const struct mf_entry *e)
{
	return e->kind == 's';
}

/* mf_keep: what stays is as it was read, still found by path; what goes is not found. */
Test(manifest, keep_some)
{
	write_sample("m");
	struct mf m;
	cr_assert_eq(load("m", &m), 0, "%s", m.why);
	struct mf_entry e[NSAMPLE];
	sample_entries(e);
	cr_assert_eq(mf_keep(&m, keep_databases), 0);
	cr_assert_eq(m.n, 3, "the three databases");
	for (unsigned i = 0; i < NSAMPLE; i++) {
		const struct mf_entry *g = mf_find(&m, e[i].path);
		if (e[i].kind != 's') {
			cr_assert_null(g, "entry %u was kept", i);
			continue;
		}
		cr_assert_not_null(g, "entry %u", i);
		cr_assert_str_eq(g->path, e[i].path);
		cr_assert_arr_eq(g->digest, e[i].digest, 32, "entry %u", i);
		if (e[i].ident)
			cr_assert_str_eq(g->ident, e[i].ident, "entry %u", i);
		else
			cr_assert_null(g->ident, "entry %u", i);
		struct dd_blocks b;
		dd_init(&b);
		int rc = mf_blocks_of(&m, e[i].path, &b);
		cr_assert_eq(rc, e[i].blocks ? 0 : -ENOENT, "entry %u", i);
		if (e[i].blocks)
			cr_assert_arr_eq(b.d, e[i].blocks, b.n * 32, "entry %u", i);
		dd_free(&b);
	}
	cr_assert_eq(mf_keep(&m, keep_databases), 0, "again, nothing to drop");
	cr_assert_eq(m.n, 3);
	mf_free(&m);
	cr_assert_eq(m.n, 0);
}

Test(manifest, header_only_and_many_entries)
{
	struct mf out = { .stats = sample_stats() };
	write_manifest("empty", &out);
	struct mf m;
	cr_assert_eq(load("empty", &m), 0, "a snapshot of an empty store has no entries: %s", m.why);
	cr_assert_eq(m.n, 0);
	cr_assert_null(mf_find(&m, "x"));
	mf_free(&m);

	/* Enough entries to make the index grow several times. */
	static char paths[5000][32];
	for (unsigned i = 0; i < 5000; i++) {
		snprintf(paths[i], sizeof paths[i], "d%u/f %u", i % 7, i);
		struct mf_entry e = { .kind = 'f', .mode = 0644, .size = i, .path = paths[i] };
		cr_assert_eq(mf_add(&out, &e), 0);
	}
	write_manifest("many", &out);
	mf_free(&out);
	cr_assert_eq(load("many", &m), 0, "%s", m.why);
	cr_assert_eq(m.n, 5000);
	for (unsigned i = 0; i < 5000; i++) {
		const struct mf_entry *e = mf_find(&m, paths[i]);
		cr_assert_not_null(e, "%s", paths[i]);
		cr_assert_eq(e->size, i);
	}
	mf_free(&m);
}

Test(manifest, missing_file)
{
	struct mf m;
	cr_assert_eq(load("nonexistent", &m), -ENOENT);
}

/* Block digests are written only where they are worth something and add up. */
Test(manifest, blocks_written_only_when_they_add_up)
{
	static uint8_t blocks[3][32];
	struct mf out = { .stats = sample_stats() };
	struct mf_entry wrong = { .kind = 's', .size = 3 * DD_BLOCK, .has_digest = 1,
				  .path = "wrong.sqlite3", .blocks = blocks };
	struct mf_entry one = { .kind = 's', .size = DD_BLOCK, .has_digest = 1,
				.path = "one.sqlite3", .blocks = blocks };
	struct mf_entry plain = { .kind = 'f', .size = 3 * DD_BLOCK, .has_digest = 1,
				  .path = "plain", .blocks = blocks };
	sha256("x", 1, wrong.digest);
	memcpy(one.digest, blocks[0], 32);
	sha256(blocks, sizeof blocks, plain.digest);
	cr_assert_eq(mf_add(&out, &wrong), 0);
	cr_assert_eq(mf_add(&out, &one), 0);
	cr_assert_eq(mf_add(&out, &plain), 0);
	write_manifest("m", &out);
	mf_free(&out);
	char text[4096];
	read_text("m", text, sizeof text);
	char *body = strstr(text, "\nblocks 0\n.\n");
	cr_assert_not_null(body, "%s", text);
	cr_assert_null(strstr(body + 1, "\nblocks "), "%s", text);
	struct mf m;
	cr_assert_eq(load("m", &m), 0, "%s", m.why);
	struct dd_blocks b;
	dd_init(&b);
	cr_assert_eq(mf_blocks_of(&m, "wrong.sqlite3", &b), -ENOENT);
	cr_assert_eq(mf_blocks_of(&m, "one.sqlite3", &b), -ENOENT);
	cr_assert_eq(mf_blocks_of(&m, "plain", &b), -ENOENT);
	mf_free(&m);
}

Test(manifest, writer_refuses_what_no_reader_accepts)
{
	struct mf_entry ok = { .kind = 'f', .path = "a" };
	static const char *bad_paths[] = { "", "/a", "..", "a/../b", "./a", "a//b", "a/" };
	for (unsigned i = 0; i < sizeof bad_paths / sizeof bad_paths[0]; i++) {
		struct mf out = { .stats = sample_stats() };
		struct mf_entry e = { .kind = 'f', .path = (char *)bad_paths[i] };
		cr_assert_eq(mf_add(&out, &ok), 0);
		cr_assert_eq(mf_add(&out, &e), 0);
		FILE *f = create("m");
		cr_assert_eq(mf_write(f, &out), -EINVAL, "path \"%s\" written", bad_paths[i]);
		fclose(f);
		mf_free(&out);
	}
	struct mf_entry twice = ok, kind = { .kind = 'x', .path = "b" };
	struct mf_entry ident = { .kind = 'f', .path = "c", .ident = "a b" };
	const struct mf_entry *second[] = { &twice, &kind, &ident };
	for (unsigned i = 0; i < 3; i++) {
		struct mf out = { .stats = sample_stats() };
		cr_assert_eq(mf_add(&out, &ok), 0);
		cr_assert_eq(mf_add(&out, second[i]), 0);
		FILE *f = create("m");
		cr_assert_eq(mf_write(f, &out), -EINVAL, "case %u written", i);
		fclose(f);
		mf_free(&out);
	}
}

/* ---- manifests written by hand ---------------------------------------------------------- */

/* Append the end line to text: what a writer would have produced. */
static void seal(char *text, size_t room)
{
	uint8_t d[32];
	char hex[65];
	size_t len = strlen(text);
	sha256(text, len, d);
	sha256_hex(d, hex);
	snprintf(text + len, room - len, "end %s\n", hex);
}

static int load_text(const char *text)
{
	struct mf m;
	write_text("m", text);
	int rc = load("m", &m);
	if (rc == 0)
		mf_free(&m);
	return rc;
}

static int load_sealed(const char *text)
{
	char buf[8192];
	snprintf(buf, sizeof buf, "%s", text);
	seal(buf, sizeof buf);
	return load_text(buf);
}

/* A valid header with these counts, to which each case appends its lines. */
static void header(char *out, size_t room, int files, int entries, int blocks)
{
	snprintf(out, room,
		 "stillfs-manifest 2\n"
		 "id 20250102T030405.678Z-0a1b2c3d\n"
		 "cut_ns 1735787045678901234\n"
		 "digest sha256-1m\n"
		 "files %d\nentries %d\nblocks %d\n.\n", files, entries, blocks);
}
#define D64 "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

/* One entry line under a header that counts it, sealed. */
static int load_entry(const char *line)
{
	char text[1024];
	header(text, sizeof text, line[0] == 'f' || line[0] == 's', 1, 0);
	snprintf(text + strlen(text), sizeof text - strlen(text), "%s\n", line);
	return load_sealed(text);
}

Test(manifest, accepts_the_good_cases)
{
	/* The malformed cases below differ from these in one thing only. */
	cr_assert_eq(load_entry("f 644 0 0 3 1 " D64 " - a/b"), 0);
	cr_assert_eq(load_entry("l 777 0 0 3 1 " D64 " - ..a/b.."), 0);
	cr_assert_eq(load_entry("d 755 0 0 0 1 - - .hidden/..."), 0);
	cr_assert_eq(load_entry("s 644 0 0 3 1 " D64 " 1.2.3.4.5/- a%2F..b"), 0);
	/* Header keys it does not know are for newer writers. */
	cr_assert_eq(load_sealed("stillfs-manifest 2\nfuture_key some value\nfiles 0\nentries 0\n"
				 "blocks 0\n.\n"), 0);
}

Test(manifest, rejects_bad_first_line)
{
	cr_assert_eq(load_text(""), -EBADMSG, "empty file");
	cr_assert_eq(load_sealed(""), -EBADMSG, "only an end line");
	cr_assert_eq(load_sealed("\n"), -EBADMSG);
	cr_assert_eq(load_sealed("stillfs-manifest 3\nfiles 0\nentries 0\nblocks 0\n.\n"),
		     -EBADMSG, "unknown version");
	cr_assert_eq(load_sealed("stillfs-manifest 2 \nfiles 0\nentries 0\nblocks 0\n.\n"),
		     -EBADMSG);
	cr_assert_eq(load_sealed("stillfs-manifes 2\nfiles 0\nentries 0\nblocks 0\n.\n"), -EBADMSG);
	cr_assert_eq(load_sealed("SQLite format 3\n.\n"), -EBADMSG);
	cr_assert_eq(load_sealed("id x\nstillfs-manifest 2\nfiles 0\nentries 0\nblocks 0\n.\n"),
		     -EBADMSG);
}

/* The previous format (no counts, no end line): not readable, and saying why. */
Test(manifest, refuses_the_previous_format_saying_so)
{
	write_text("m", "stillfs-manifest 1\nid x\ncut_ns 1\nfiles 1\n.\n"
			"f 644 0 0 3 1 " D64 " - a\n");
	struct mf m;
	cr_assert_eq(load("m", &m), -EBADMSG);
	cr_assert_not_null(strstr(m.why, "version 1"), "%s", m.why);
}

Test(manifest, rejects_bad_headers)
{
	cr_assert_eq(load_text("stillfs-manifest 2\n"), -EBADMSG, "no header end");
	cr_assert_eq(load_sealed("stillfs-manifest 2\nid x\ncut_ns 1\n"), -EBADMSG, "no header end");
	cr_assert_eq(load_text("stillfs-manifest 2\nid x\ncut_n"), -EBADMSG, "cut mid-line");
	cr_assert_eq(load_sealed("stillfs-manifest 2\nid\nfiles 0\nentries 0\nblocks 0\n.\n"),
		     -EBADMSG, "key without value");
	cr_assert_eq(load_sealed("stillfs-manifest 2\ndigest sha256\nfiles 0\nentries 0\nblocks 0\n"
				 ".\n"), -EBADMSG, "another digest scheme");
	cr_assert_eq(load_sealed("stillfs-manifest 2\nfiles 0\nblocks 0\n.\n"), -EBADMSG,
		     "no entries count");
	cr_assert_eq(load_sealed("stillfs-manifest 2\nfiles 0\nentries 0\n.\n"), -EBADMSG,
		     "no blocks count");
	cr_assert_eq(load_sealed("stillfs-manifest 2\nentries 0\nblocks 0\n.\n"), -EBADMSG,
		     "no files count");
	cr_assert_eq(load_sealed("stillfs-manifest 2\nfiles 0\nentries 0\nentries 0\nblocks 0\n.\n"),
		     -EBADMSG, "a count twice");
	cr_assert_eq(load_sealed("stillfs-manifest 2\nfiles 0\nentries x\nblocks 0\n.\n"), -EBADMSG,
		     "a count not a number");
	cr_assert_eq(load_sealed("stillfs-manifest 2\nfiles 0\nentries -0\nblocks 0\n.\n"),
		     -EBADMSG, "a count not a number");
}

Test(manifest, rejects_bad_digest)
{
	cr_assert_eq(load_entry("f 644 0 0 3 1 ba7816bf - a"), -EBADMSG, "short");
	cr_assert_eq(load_entry("f 644 0 0 3 1 " D64 "00 - a"), -EBADMSG, "long");
	cr_assert_eq(load_entry("f 644 0 0 3 1 "
				"za7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad - a"),
		     -EBADMSG, "not hex");
	cr_assert_eq(load_entry("f 644 0 0 3 1 -- - a"), -EBADMSG);
}

Test(manifest, rejects_bad_entry_lines)
{
	cr_assert_eq(load_entry("x 644 0 0 3 1 - - a"), -EBADMSG, "unknown kind");
	cr_assert_eq(load_entry("ff 644 0 0 3 1 - - a"), -EBADMSG, "kind too long");
	cr_assert_eq(load_entry("f 644 0 0 3 1 " D64 " -"), -EBADMSG, "no path");
	cr_assert_eq(load_entry("f 644 0 0 3"), -EBADMSG, "truncated line");
	cr_assert_eq(load_entry(""), -EBADMSG, "empty line");
}

Test(manifest, rejects_paths_that_escape)
{
	static const char *bad[] = {
		"..", "../a", "a/..", "a/../b", "a/b/../../..", "/etc/passwd", "/", "%2Fetc%2Fpasswd",
		"a%2F..%2Fb", "%2E%2E", "%2e%2e/x", ".", "./a", "a/.", "a/./b", "%00", "a%00b", "%zz",
		"%", "a%2F%2Fb", "a%2F",
	};
	char line[256];
	for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(line, sizeof line, "f 644 0 0 3 1 " D64 " - %s", bad[i]);
		cr_assert_eq(load_entry(line), -EBADMSG, "path \"%s\" was accepted", bad[i]);
	}
}

/* A bad line anywhere fails the whole load: nothing half-parsed is handed back. */
Test(manifest, bad_line_after_good_ones)
{
	char text[2048];
	header(text, sizeof text, 4, 4, 0);
	snprintf(text + strlen(text), sizeof text - strlen(text),
		 "f 644 0 0 3 1 " D64 " - ok1\nf 644 0 0 3 1 " D64 " - ok2\n"
		 "f 644 0 0 3 1 " D64 " - ok3/../../evil\nf 644 0 0 3 1 " D64 " - ok4\n");
	cr_assert_eq(load_sealed(text), -EBADMSG);
}

/* Every field is checked, not just counted: a line with a raw space in its path (a
 * hand-edited or corrupted manifest; the writer escapes spaces) must not be read as a
 * shorter path, and numbers must be numbers. */
Test(manifest, rejects_extra_fields_and_non_numbers)
{
	cr_expect_eq(load_entry("f 644 0 0 3 1 " D64 " - a b"), -EBADMSG, "10 fields accepted");
	cr_expect_eq(load_entry("f 644 0 0 3 1 " D64 " - a/b ../../etc/passwd"), -EBADMSG,
		     "10 fields accepted");
	cr_expect_eq(load_entry("f 6x4 0 0 3 1 " D64 " - a"), -EBADMSG, "mode 6x4 accepted");
	cr_expect_eq(load_entry("f 644 0 0 three 1 " D64 " - a"), -EBADMSG, "size 'three' accepted");
	cr_expect_eq(load_entry("f 644 0 0 -3 1 " D64 " - a"), -EBADMSG, "negative size accepted");
	cr_expect_eq(load_entry("f 644 root 0 3 1 " D64 " - a"), -EBADMSG, "uid 'root' accepted");
}

/* ---- a written manifest, damaged -------------------------------------------------------- */

/* The sample manifest as lines (without their newlines): hdr_end is the "." line, the end
 * line is the last. */
struct lines {
	char text[8192];
	char *l[64];
	size_t n, hdr_end;
};

static void sample_lines(struct lines *L)
{
	write_sample("m");
	read_text("m", L->text, sizeof L->text);
	L->n = 0;
	for (char *p = L->text, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
		*nl = 0;
		cr_assert_lt(L->n, 64);
		if (!strcmp(p, "."))
			L->hdr_end = L->n;
		L->l[L->n++] = p;
	}
	cr_assert_eq(L->n, L->hdr_end + 1 + NSAMPLE + 2 + 1, "%zu lines", L->n);
	cr_assert_eq(strncmp(L->l[L->n - 1], "end ", 4), 0);
}

/* The sample's lines in the order given (n of them, its end line not among them), then
 * its own end line or, with reseal, one that matches what comes before. */
static int load_lines(const struct lines *L, const size_t *order, size_t n, int reseal)
{
	static char out[8192];
	size_t len = 0;
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(out + len, sizeof out - len, "%s\n", L->l[order[i]]);
	if (reseal)
		seal(out, sizeof out);
	else
		snprintf(out + len, sizeof out - len, "%s\n", L->l[L->n - 1]);
	return load_text(out);
}

Test(manifest, truncated_anywhere)
{
	char text[8192];
	write_sample("m");
	size_t len = read_text("m", text, sizeof text);
	struct mf m;
	cr_assert_eq(load("m", &m), 0, "%s", m.why);
	mf_free(&m);
	for (size_t cut = 0; cut < len; cut++) {
		write_bytes("t", text, cut);
		cr_assert_eq(load("t", &m), -EBADMSG, "cut at byte %zu of %zu accepted", cut, len);
		if (cut)
			cr_assert_not_null(strstr(m.why, "truncated"), "cut at %zu: %s", cut, m.why);
	}
}

/* Lines dropped, with an end line made to match: the counts still tell. */
Test(manifest, any_line_dropped)
{
	struct lines L;
	sample_lines(&L);
	size_t order[64];
	for (size_t drop = L.hdr_end + 1; drop < L.n - 1; drop++) {
		size_t n = 0;
		for (size_t i = 0; i < L.n - 1; i++)
			if (i != drop)
				order[n++] = i;
		cr_assert_eq(load_lines(&L, order, n, 1), -EBADMSG, "without line %zu: accepted", drop);
		cr_assert_eq(load_lines(&L, order, n, 0), -EBADMSG, "without line %zu: accepted", drop);
	}
}

Test(manifest, any_two_lines_swapped)
{
	struct lines L;
	sample_lines(&L);
	size_t order[64];
	for (size_t a = 0; a < L.n - 1; a++) {
		for (size_t b = a + 1; b < L.n - 1; b++) {
			for (size_t i = 0; i < L.n - 1; i++)
				order[i] = i == a ? b : i == b ? a : i;
			cr_assert_eq(load_lines(&L, order, L.n - 1, 0), -EBADMSG,
				     "lines %zu and %zu swapped: accepted", a, b);
			/* Only header lines may come in another order. */
			if (b > L.hdr_end)
				cr_assert_eq(load_lines(&L, order, L.n - 1, 1), -EBADMSG,
					     "lines %zu and %zu swapped and resealed: accepted", a, b);
		}
	}
}

/* Counts that disagree with the lines, even with an end line made to match. */
Test(manifest, miscounted)
{
	struct lines L;
	sample_lines(&L);
	static const char *keys[] = { "files", "entries", "blocks" };
	char changed[64];
	for (unsigned k = 0; k < 3; k++) {
		for (int delta = -1; delta <= 1; delta += 2) {
			size_t at = 0;
			while (strncmp(L.l[at], keys[k], strlen(keys[k])) || L.l[at][strlen(keys[k])] != ' ')
				cr_assert_lt(++at, L.hdr_end);
			char *was = L.l[at];
			long v = strtol(was + strlen(keys[k]) + 1, NULL, 10);
			snprintf(changed, sizeof changed, "%s %ld", keys[k], v + delta);
			L.l[at] = changed;
			size_t order[64];
			for (size_t i = 0; i < L.n - 1; i++)
				order[i] = i;
			cr_assert_eq(load_lines(&L, order, L.n - 1, 1), -EBADMSG, "%s accepted", changed);
			L.l[at] = was;
		}
	}
}

/* Any byte changed, its end line included. */
Test(manifest, any_byte_changed)
{
	char text[8192];
	write_sample("m");
	size_t len = read_text("m", text, sizeof text);
	struct mf m;
	for (size_t i = 0; i < len; i++) {
		text[i] ^= 1;
		write_bytes("t", text, len);
		cr_assert_eq(load("t", &m), -EBADMSG, "byte %zu changed: accepted", i);
		text[i] ^= 1;
	}
	/* Nor may anything follow the end line. */
	memcpy(text + len, "\n", 2);
	write_text("t", text);
	cr_assert_eq(load("t", &m), -EBADMSG, "an empty line after the end accepted");
	memcpy(text + len, text, len);
	write_bytes("t", text, 2 * len);
	cr_assert_eq(load("t", &m), -EBADMSG, "a manifest twice accepted");
}

Test(manifest, rejects_bad_block_lines)
{
	/* Two 2-block databases; their blocks are 32 zero bytes each and 32 0x01 bytes each. */
	uint8_t zero[2][32] = { { 0 } }, one[2][32];
	memset(one, 1, sizeof one);
	uint8_t dz[32], d1[32];
	char hz[65], h1[65], bz[129], b1[129], text[4096];
	sha256(zero, sizeof zero, dz);
	sha256(one, sizeof one, d1);
	sha256_hex(dz, hz);
	sha256_hex(d1, h1);
	for (int i = 0; i < 2; i++) {
		sha256_hex(zero[i], bz + 64 * i);
		sha256_hex(one[i], b1 + 64 * i);
	}
	header(text, sizeof text, 3, 3, 2);
	size_t hl = strlen(text);
#define ENTRIES(k1, k2) \
	snprintf(text + hl, sizeof text - hl, \
		 "%c 644 0 0 2097152 1 %s - a\n%c 644 0 0 2097152 1 %s - b\nf 644 0 0 1 1 %s - c\n", \
		 k1, hz, k2, h1, hz)
	ENTRIES('s', 's');
	size_t el = strlen(text);
#define BLOCKS(fmt, ...) snprintf(text + el, sizeof text - el, fmt, __VA_ARGS__)
	BLOCKS("blocks a %s\nblocks b %s\n", bz, b1);
	cr_assert_eq(load_sealed(text), 0, "the good case");
	BLOCKS("blocks b %s\nblocks a %s\n", b1, bz);
	cr_assert_eq(load_sealed(text), -EBADMSG, "out of order");
	BLOCKS("blocks a %s\nblocks a %s\n", bz, bz);
	cr_assert_eq(load_sealed(text), -EBADMSG, "twice");
	BLOCKS("blocks a %s\nblocks b %s\n", b1, bz);
	cr_assert_eq(load_sealed(text), -EBADMSG, "not adding up");
	BLOCKS("blocks a %s\nblocks b %.64s\n", bz, b1);
	cr_assert_eq(load_sealed(text), -EBADMSG, "too short");
	BLOCKS("blocks a %s\nblocks b %s00\n", bz, b1);
	cr_assert_eq(load_sealed(text), -EBADMSG, "too long");
	BLOCKS("blocks a %s\nblocks x %s\n", bz, b1);
	cr_assert_eq(load_sealed(text), -EBADMSG, "not listed");
	BLOCKS("blocks a %s\nblocks c %s\n", bz, bz);
	cr_assert_eq(load_sealed(text), -EBADMSG, "of a plain file");
	BLOCKS("blocks a %s\nblocks b %s x\n", bz, b1);
	cr_assert_eq(load_sealed(text), -EBADMSG, "a field more");
	char was = bz[5];
	bz[5] = 'g';
	BLOCKS("blocks a %s\nblocks b %s\n", bz, b1);
	cr_assert_eq(load_sealed(text), -EBADMSG, "not hex");
	bz[5] = was;
	ENTRIES('s', 'f');
	el = strlen(text);
	BLOCKS("blocks a %s\nblocks b %s\n", bz, b1);
	cr_assert_eq(load_sealed(text), -EBADMSG, "of a plain file");
#undef ENTRIES
#undef BLOCKS
}

/* ---- verify ----------------------------------------------------------------------------- */

/* A copy "c" of a snapshot of three files and a directory, and its manifest. In path order
 * the first entry is a.txt, the last d/e.txt. */
static const char *const vf_files[] = { "a.txt", "b.txt", "d/e.txt" };

static void vf_make_copy(void)
{
	cr_assert_eq(mkdirat(basefd, "c", 0755), 0);
	cr_assert_eq(mkdirat(basefd, "c/d", 0755), 0);
	struct mf out = { .stats = sample_stats() };
	static char paths[3][16], content[3][16];
	struct mf_entry d = { .kind = 'd', .mode = 0755, .path = "d" };
	cr_assert_eq(mf_add(&out, &d), 0);
	for (unsigned i = 0; i < 3; i++) {
		snprintf(paths[i], sizeof paths[i], "c/%s", vf_files[i]);
		snprintf(content[i], sizeof content[i], "content %u\n", i);
		write_text(paths[i], content[i]);
		int fd = openat(basefd, paths[i], O_RDONLY | O_CLOEXEC);
		struct cp_result r;
		cr_assert_eq(cp_digest_fd(fd, &r), 0);
		close(fd);
		struct mf_entry e = { .kind = 'f', .mode = 0644, .size = r.size, .has_digest = 1,
				      .path = (char *)vf_files[i] };
		memcpy(e.digest, r.digest, 32);
		cr_assert_eq(mf_add(&out, &e), 0);
	}
	write_manifest("c/" CAP_MANIFEST_NAME, &out);
	mf_free(&out);
}

/* vf_verify of the copy: its result, the report in buf. */
static int vf_run(char *buf, size_t room, int ignore_extra)
{
	char dir[128];
	snprintf(dir, sizeof dir, "%s/c", base);
	struct vf_opts o = { .ignore_extra = ignore_extra, .quick = 1 };
	memset(buf, 0, room);
	FILE *f = fmemopen(buf, room - 1, "w");
	cr_assert_not_null(f);
	int rc = vf_verify(dir, &o, f);
	fclose(f);
	return rc;
}

Test(verify, a_whole_copy_passes)
{
	vf_make_copy();
	char report[4096];
	cr_assert_eq(vf_run(report, sizeof report, 0), 0, "%s", report);
	cr_assert_not_null(strstr(report, "OK"), "%s", report);
}

Test(verify, a_missing_file_anywhere)
{
	vf_make_copy();
	char report[4096], want[64], path[64];
	for (unsigned i = 0; i < 3; i++) {
		snprintf(path, sizeof path, "c/%s", vf_files[i]);
		cr_assert_eq(renameat(basefd, path, basefd, "away"), 0);
		cr_assert_eq(vf_run(report, sizeof report, 0), 1, "%s gone: %s", path, report);
		snprintf(want, sizeof want, "missing %s\n", vf_files[i]);
		cr_assert_not_null(strstr(report, want), "%s", report);
		cr_assert_eq(renameat(basefd, "away", basefd, path), 0);
	}
	cr_assert_eq(vf_run(report, sizeof report, 0), 0, "%s", report);
}

Test(verify, an_extra_file)
{
	vf_make_copy();
	char report[4096];
	write_text("c/d/stray", "x");
	cr_assert_eq(vf_run(report, sizeof report, 0), 1, "%s", report);
	cr_assert_not_null(strstr(report, "extra d/stray: not in the manifest\n"), "%s", report);
	cr_assert_eq(vf_run(report, sizeof report, 1), 0, "--ignore-extra: %s", report);
}

Test(verify, a_modified_file)
{
	vf_make_copy();
	char report[4096];
	write_text("c/b.txt", "content X\n");
	cr_assert_eq(vf_run(report, sizeof report, 0), 1, "%s", report);
	cr_assert_not_null(strstr(report, "differs b.txt: content"), "%s", report);
	write_text("c/b.txt", "content 1\n\n");
	cr_assert_eq(vf_run(report, sizeof report, 0), 1, "%s", report);
	cr_assert_not_null(strstr(report, "differs b.txt: size"), "%s", report);
}

/* The copy is missing its last file and its manifest was cut short before that file's
 * line, or inside it: a manifest that is not whole is no basis for a pass. */
Test(verify, a_cut_manifest_at_any_byte)
{
	vf_make_copy();
	char text[4096], report[4096];
	size_t len = read_text("c/" CAP_MANIFEST_NAME, text, sizeof text);
	cr_assert_eq(unlinkat(basefd, "c/d/e.txt", 0), 0);
	for (size_t cut = 0; cut < len; cut++) {
		write_bytes("c/" CAP_MANIFEST_NAME, text, cut);
		cr_assert_eq(vf_run(report, sizeof report, 0), -EBADMSG, "cut at %zu of %zu: %s", cut,
			     len, report);
	}
}

Test(verify, a_reordered_or_miscounted_manifest)
{
	vf_make_copy();
	char text[4096], report[4096];
	size_t len = read_text("c/" CAP_MANIFEST_NAME, text, sizeof text);
	/* a.txt's and b.txt's lines swapped */
	char *a = strstr(text, "f 644"), *b = strchr(a, '\n') + 1, *c = strchr(b, '\n') + 1;
	char swapped[4096];
	size_t la = (size_t)(b - a), lb = (size_t)(c - b);
	memcpy(swapped, text, len + 1);
	memcpy(swapped + (a - text), b, lb);
	memcpy(swapped + (a - text) + lb, a, la);
	write_text("c/" CAP_MANIFEST_NAME, swapped);
	cr_assert_eq(vf_run(report, sizeof report, 0), -EBADMSG, "%s", report);
	/* files 3 said to be 2, and resealed */
	char *files = strstr(text, "\nfiles 3\n");
	cr_assert_not_null(files);
	files[7] = '2';
	*strstr(text, "end ") = 0;
	seal(text, sizeof text);
	write_text("c/" CAP_MANIFEST_NAME, text);
	cr_assert_eq(vf_run(report, sizeof report, 0), -EBADMSG, "%s", report);
}
