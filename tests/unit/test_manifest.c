/* Unit tests for manifest.c: write, load back, look up; malformed manifests refused. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "manifest.h"
#include "sha256.h"

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
}

static void teardown(void)
{
	if (basefd >= 0)
		close(basefd);
	basefd = -1;
	nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(manifest, .init = setup, .fini = teardown, .timeout = 30);

static FILE *create(const char *name)
{
	int fd = openat(basefd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	cr_assert_geq(fd, 0);
	FILE *f = fdopen(fd, "w");
	cr_assert_not_null(f);
	return f;
}

static void write_text(const char *name, const char *text)
{
	FILE *f = create(name);
	fputs(text, f);
	cr_assert_eq(fclose(f), 0);
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
	st.files = 123456789012ULL;
	st.bytes_copied = 9876543210123ULL;
	st.bytes_linked = 42;
	st.retries = 7;
	return st;
}

#define NSAMPLE 8

/* Every kind, with and without digest and identity, and paths that need escaping. */
static void sample_entries(struct mf_entry e[NSAMPLE])
{
	static char *paths[NSAMPLE] = {
		"seg", "seg/data_level0.bin", "chroma.sqlite3", "link to it",
		"we\nird %name\t\x01", "caf\xc3\xa9/\x80\xfe\xff", "a/..b/..c/.d", "x"
	};
	static const char kinds[NSAMPLE] = { 'd', 'f', 's', 'l', 'f', 'f', 'f', 'f' };
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
}

static void write_sample(const char *name)
{
	struct cap_stats st = sample_stats();
	struct mf_entry e[NSAMPLE];
	sample_entries(e);
	FILE *f = create(name);
	cr_assert_eq(mf_write_header(f, &st), 0);
	for (unsigned i = 0; i < NSAMPLE; i++)
		cr_assert_eq(mf_write_entry(f, &e[i]), 0);
	cr_assert_eq(fclose(f), 0);
}

Test(manifest, round_trip)
{
	write_sample("m");
	struct mf m;
	int rc = mf_load(basefd, "m", &m);
	cr_assert_eq(rc, 0, "mf_load: %s", strerror(-rc));

	struct cap_stats want = sample_stats();
	cr_assert_str_eq(m.stats.id, want.id);
	cr_assert_eq(m.stats.cut.tv_sec, want.cut.tv_sec);
	cr_assert_eq(m.stats.cut.tv_nsec, want.cut.tv_nsec);
	cr_assert_float_eq(m.stats.duration_s, want.duration_s, 1e-6);
	cr_assert_float_eq(m.stats.lock_max_s, want.lock_max_s, 1e-6);
	cr_assert_eq(m.stats.files, want.files);
	cr_assert_eq(m.stats.bytes_copied, want.bytes_copied);
	cr_assert_eq(m.stats.bytes_linked, want.bytes_linked);
	cr_assert_eq(m.stats.retries, want.retries);

	struct mf_entry e[NSAMPLE];
	sample_entries(e);
	cr_assert_eq(m.n, NSAMPLE);
	for (unsigned i = 0; i < NSAMPLE; i++) {
		const struct mf_entry *g = &m.e[i];
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
		/* mf_find hands back this very entry. */
		cr_assert_eq(mf_find(&m, e[i].path), g, "mf_find(%u)", i);
	}
	cr_assert_null(mf_find(&m, "missing"));
	cr_assert_null(mf_find(&m, "se"));
	cr_assert_null(mf_find(&m, "seg/"));
	cr_assert_null(mf_find(&m, ""));
	mf_free(&m);
	cr_assert_eq(m.n, 0);
}

Test(manifest, header_only_and_many_entries)
{
	struct cap_stats st = sample_stats();
	FILE *f = create("empty");
	cr_assert_eq(mf_write_header(f, &st), 0);
	cr_assert_eq(fclose(f), 0);
	struct mf m;
	cr_assert_eq(mf_load(basefd, "empty", &m), 0, "a snapshot of an empty store has no entries");
	cr_assert_eq(m.n, 0);
	cr_assert_null(mf_find(&m, "x"));
	mf_free(&m);

	/* Enough entries to make the index grow several times. */
	f = create("many");
	cr_assert_eq(mf_write_header(f, &st), 0);
	char path[64];
	for (unsigned i = 0; i < 5000; i++) {
		snprintf(path, sizeof path, "d%u/f %u", i % 7, i);
		struct mf_entry e = { .kind = 'f', .mode = 0644, .size = i, .path = path };
		cr_assert_eq(mf_write_entry(f, &e), 0);
	}
	cr_assert_eq(fclose(f), 0);
	cr_assert_eq(mf_load(basefd, "many", &m), 0);
	cr_assert_eq(m.n, 5000);
	for (unsigned i = 0; i < 5000; i++) {
		snprintf(path, sizeof path, "d%u/f %u", i % 7, i);
		const struct mf_entry *e = mf_find(&m, path);
		cr_assert_not_null(e, "%s", path);
		cr_assert_eq(e->size, i);
	}
	mf_free(&m);
}

Test(manifest, missing_file)
{
	struct mf m;
	cr_assert_eq(mf_load(basefd, "nonexistent", &m), -ENOENT);
}

/* A valid header, to which each case appends its entry lines. */
static const char good_header[] =
	"stillfs-manifest 1\n"
	"id 20250102T030405.678Z-0a1b2c3d\n"
	"cut_ns 1735787045678901234\n"
	"digest sha256-1m\n"
	".\n";
#define D64 "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

static int load_text(const char *text)
{
	struct mf m;
	write_text("m", text);
	int rc = mf_load(basefd, "m", &m);
	if (rc == 0)
		mf_free(&m);
	return rc;
}

static int load_entry(const char *line)
{
	char text[1024];
	snprintf(text, sizeof text, "%s%s\n", good_header, line);
	return load_text(text);
}

Test(manifest, accepts_the_good_cases)
{
	/* The malformed cases below differ from these in one thing only. */
	cr_assert_eq(load_entry("f 644 0 0 3 1 " D64 " - a/b"), 0);
	cr_assert_eq(load_entry("l 777 0 0 3 1 " D64 " - ..a/b.."), 0);
	cr_assert_eq(load_entry("d 755 0 0 0 1 - - .hidden/..."), 0);
	cr_assert_eq(load_entry("s 644 0 0 3 1 " D64 " 1.2.3.4.5/- a%2F..b"), 0);
	/* Header keys it does not know are for newer writers. */
	char text[512];
	snprintf(text, sizeof text, "stillfs-manifest 1\nfuture_key some value\n.\n");
	cr_assert_eq(load_text(text), 0);
}

Test(manifest, rejects_bad_first_line)
{
	cr_assert_eq(load_text(""), -EBADMSG, "empty file");
	cr_assert_eq(load_text("\n"), -EBADMSG);
	cr_assert_eq(load_text("stillfs-manifest 2\n.\n"), -EBADMSG, "unknown version");
	cr_assert_eq(load_text("stillfs-manifest 1 \n.\n"), -EBADMSG);
	cr_assert_eq(load_text("stillfs-manifes 1\n.\n"), -EBADMSG);
	cr_assert_eq(load_text("SQLite format 3\n.\n"), -EBADMSG);
	cr_assert_eq(load_text("id x\nstillfs-manifest 1\n.\n"), -EBADMSG);
}

Test(manifest, rejects_truncated_header)
{
	cr_assert_eq(load_text("stillfs-manifest 1\n"), -EBADMSG, "no header end");
	cr_assert_eq(load_text("stillfs-manifest 1\nid x\ncut_ns 1\n"), -EBADMSG, "no header end");
	cr_assert_eq(load_text("stillfs-manifest 1\nid x\ncut_n"), -EBADMSG, "cut mid-line");
	cr_assert_eq(load_text("stillfs-manifest 1\nid\n.\n"), -EBADMSG, "key without value");
	cr_assert_eq(load_text("stillfs-manifest 1\ndigest sha256\n.\n"), -EBADMSG,
		     "another digest scheme");
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
		"%",
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
	char text[1024];
	snprintf(text, sizeof text,
		 "%sf 644 0 0 3 1 " D64 " - ok1\nf 644 0 0 3 1 " D64 " - ok2\n"
		 "f 644 0 0 3 1 " D64 " - ../evil\nf 644 0 0 3 1 " D64 " - ok3\n",
		 good_header);
	struct mf m;
	write_text("m", text);
	cr_assert_eq(mf_load(basefd, "m", &m), -EBADMSG);
	cr_assert_eq(m.n, 0);
	cr_assert_null(m.e);
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
