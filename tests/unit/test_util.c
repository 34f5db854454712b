/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for util.c: ut_escape (what keeps a file name from breaking or forging a log or
 * status line), logging, time conversions, byte formatting, the string map, and the file
 * helpers (a walk that stays beneath a directory, full reads and writes). */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

Test(escape, plain_text_is_unchanged)
{
	char buf[64];
	cr_assert_str_eq(ut_escape(buf, sizeof buf, "db/chroma.sqlite3 ü", 1), "db/chroma.sqlite3 ü");
}

Test(escape, control_characters_and_backslash)
{
	char buf[64];
	cr_assert_str_eq(ut_escape(buf, sizeof buf, "a\nb\tc\\d\x1b[0m\x7f", 1),
			 "a\\nb\\tc\\\\d\\x1b[0m\\x7f");
	/* Text escaped once keeps its backslashes when escaped again without them. */
	cr_assert_str_eq(ut_escape(buf, sizeof buf, "a\\nb\r", 0), "a\\nb\\x0d");
}

Test(escape, cut_never_inside_an_escape)
{
	char buf[6];
	cr_assert_str_eq(ut_escape(buf, sizeof buf, "abcd\n", 1), "abcd");
	cr_assert_str_eq(ut_escape(buf, sizeof buf, "ab\x01", 1), "ab");
	cr_assert_str_eq(ut_escape(buf, 1, "abc", 1), "");
}

/* C1 controls (U+009B is CSI) and bytes that are not UTF-8 (a lone 0x9b is CSI to a terminal
 * that is not in UTF-8) drive terminals as ESC does; whole characters pass, and are never cut. */
Test(escape, c1_controls_and_bytes_not_utf8)
{
	char buf[64];
	cr_assert_str_eq(ut_escape(buf, sizeof buf, "a\xc2\x9b" "2J\x9b\xff\xc3\xa9\xc2\xa0\xe2\x82\xac", 1),
			 "a\\xc2\\x9b2J\\x9b\\xff\xc3\xa9\xc2\xa0\xe2\x82\xac");
	cr_assert_str_eq(ut_escape(buf, sizeof buf, "\xc0\xaf\xed\xa0\x80\xe2\x82", 1),
			 "\\xc0\\xaf\\xed\\xa0\\x80\\xe2\\x82");
	cr_assert_str_eq(ut_escape(buf, 5, "ab\xe2\x82\xac", 1), "ab");
}

/* ---- logging ------------------------------------------------------------------------------ */

Test(log, errors_are_counted_and_the_last_is_kept_escaped)
{
	unsigned before = log_error_count();
	log_set_quiet(1);
	log_info("not an error");
	log_warn("not an error either");
	cr_assert_eq(log_error_count(), before);
	log_err("cannot open %s: %s", "evil\nname\\x", "No such file");
	cr_assert_eq(log_error_count(), before + 1);
	cr_assert_str_eq(log_last_error(), "cannot open evil\\nname\\\\x: No such file");
	/* A relayed line is escaped already: its backslashes stay single, control characters
	 * are escaped again. */
	log_relay(LOG_KIND_ERR, "helper: %s", "evil\\nname\t");
	cr_assert_eq(log_error_count(), before + 2);
	cr_assert_str_eq(log_last_error(), "helper: evil\\nname\\t");
	log_relay(LOG_KIND_WARN, "a warning");
	cr_assert_eq(log_error_count(), before + 2);
	cr_assert_str_eq(log_last_error(), "helper: evil\\nname\\t");
}

/* ---- time --------------------------------------------------------------------------------- */

Test(time, nanoseconds_and_back_also_before_1970)
{
	static const int64_t ns[] = { 0, 1, 999999999, 1000000000, -1, -999999999, -1000000000,
				      -1000000001, 1700000000123456789LL, -1700000000123456789LL };
	for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
		struct timespec t = ut_ns_ts(ns[i]);
		cr_assert(t.tv_nsec >= 0 && t.tv_nsec < 1000000000L, "%lld: tv_nsec %ld",
			  (long long)ns[i], t.tv_nsec);
		cr_assert_eq(ut_ts_ns(t), ns[i]);
	}
	struct timespec t = ut_ns_ts(-1);
	cr_assert_eq(t.tv_sec, -1);
	cr_assert_eq(t.tv_nsec, 999999999L);
}

Test(time, saturates_past_what_int64_nanoseconds_hold)
{
	/* touch -d 2300-01-01 */
	struct timespec far = { 10413792000, 5 }, past = { -10413792000, 0 };
	cr_assert_eq(ut_ts_ns(far), INT64_MAX);
	cr_assert_eq(ut_ts_ns(past), INT64_MIN);
}

Test(time, clocks_move_forward)
{
	double a = ut_now();
	struct timespec r = ut_realtime();
	cr_assert_gt(r.tv_sec, 1600000000);
	cr_assert_geq(ut_now(), a);
}

/* ---- formatting --------------------------------------------------------------------------- */

Test(format, bytes_in_binary_units)
{
	static const struct { uint64_t n; const char *s; } c[] = {
		{ 0, "0 B" }, { 1023, "1023 B" }, { 1024, "1.0 KiB" }, { 1536, "1.5 KiB" },
		{ 5ULL << 20, "5.0 MiB" }, { 3ULL << 30, "3.0 GiB" }, { 2ULL << 40, "2.0 TiB" },
		{ 4096ULL << 40, "4096.0 TiB" },  /* no unit past TiB */
	};
	char buf[32];
	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
		ut_format_bytes(c[i].n, buf, sizeof buf);
		cr_assert_str_eq(buf, c[i].s);
	}
	ut_format_bytes(1ULL << 30, buf, 4);  /* cut to fit, terminated */
	cr_assert_str_eq(buf, "1.0");
}

/* ---- the map ------------------------------------------------------------------------------ */

Test(map, put_get_delete_through_growth_and_tombstones)
{
	enum { N = 5000 };
	static char keys[N][16];
	struct ut_map m = { 0 };
	size_t v;
	cr_assert_eq(ut_map_get(&m, "x", &v), 0, "an empty map has nothing");
	ut_map_del(&m, "x");
	for (size_t i = 0; i < N; i++) {
		snprintf(keys[i], sizeof keys[i], "k%zu", i);
		cr_assert_eq(ut_map_put(&m, keys[i], i), 0);
	}
	for (size_t i = 0; i < N; i++) {
		cr_assert_eq(ut_map_get(&m, keys[i], &v), 1, "%s lost", keys[i]);
		cr_assert_eq(v, i);
	}
	/* Delete every other one: the rest, probing past the tombstones, are still found. */
	for (size_t i = 0; i < N; i += 2)
		ut_map_del(&m, keys[i]);
	for (size_t i = 0; i < N; i++)
		cr_assert_eq(ut_map_get(&m, keys[i], NULL), (int)(i & 1), "%s", keys[i]);
	/* Overwrite (a key equal in text, another pointer), and reuse deleted slots. */
	char again[16] = "k1";
	cr_assert_eq(ut_map_put(&m, again, 42), 0);
	cr_assert_eq(ut_map_get(&m, "k1", &v), 1);
	cr_assert_eq(v, 42);
	for (size_t i = 0; i < N; i += 2)
		cr_assert_eq(ut_map_put(&m, keys[i], i + 1), 0);
	for (size_t i = 0; i < N; i += 2) {
		cr_assert_eq(ut_map_get(&m, keys[i], &v), 1);
		cr_assert_eq(v, i + 1);
	}
	cr_assert_leq(m.n * 2, m.cap, "more than half full: %zu of %zu", m.n, m.cap);
	ut_map_free(&m);
	cr_assert_eq(m.cap, 0);
	cr_assert_eq(ut_map_get(&m, "k1", &v), 0);
}

/* ---- files -------------------------------------------------------------------------------- */

static char tdir[64];
static int tfd = -1;

static void files_setup(void)
{
	snprintf(tdir, sizeof tdir, "/tmp/stillfs-ut-util-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir));
	tfd = open(tdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(tfd, 0);
	cr_assert_eq(mkdirat(tfd, "a", 0700), 0);
	cr_assert_eq(mkdirat(tfd, "a/b", 0700), 0);
	int fd = openat(tfd, "a/b/f", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "hello", 5), 5);
	close(fd);
	cr_assert_eq(symlinkat("a", tfd, "link"), 0);
	cr_assert_eq(symlinkat("f", tfd, "a/b/flink"), 0);
}

static void files_teardown(void)
{
	static const char *names[] = { "a/b/flink", "a/b/f", "link", "w" };
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		unlinkat(tfd, names[i], 0);
	unlinkat(tfd, "a/b", AT_REMOVEDIR);
	unlinkat(tfd, "a", AT_REMOVEDIR);
	close(tfd);
	rmdir(tdir);
}

TestSuite(files, .init = files_setup, .fini = files_teardown);

Test(files, open_beneath_walk_opens_below_and_refuses_the_rest)
{
	char buf[8] = "";
	int fd = ut_open_beneath_walk(tfd, "a//b/f", O_RDONLY);
	cr_assert_geq(fd, 0, "%s", strerror(-fd));
	cr_assert_eq(read(fd, buf, sizeof buf), 5);
	cr_assert_str_eq(buf, "hello");
	struct stat st, want;
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_eq(fstatat(tfd, "a/b/f", &want, 0), 0);
	cr_assert(ut_same_file(&st, &want));
	cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC, "opened without O_CLOEXEC");
	close(fd);
	fd = ut_open_beneath_walk(tfd, "a/b/", O_RDONLY | O_DIRECTORY);
	cr_assert_geq(fd, 0, "a directory with a trailing slash: %s", strerror(-fd));
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert(!ut_same_file(&st, &want));
	close(fd);

	cr_assert_eq(ut_open_beneath_walk(tfd, "/etc/passwd", O_RDONLY), -EXDEV);
	cr_assert_eq(ut_open_beneath_walk(tfd, "a/../a/b/f", O_RDONLY), -EXDEV);
	cr_assert_eq(ut_open_beneath_walk(tfd, "..", O_RDONLY), -EXDEV);
	cr_assert_eq(ut_open_beneath_walk(tfd, "link/b/f", O_RDONLY), -ELOOP);
	cr_assert_eq(ut_open_beneath_walk(tfd, "a/b/flink", O_RDONLY), -ELOOP);
	cr_assert_eq(ut_open_beneath_walk(tfd, "a/b/f/x", O_RDONLY), -ENOTDIR);
	cr_assert_eq(ut_open_beneath_walk(tfd, "a/nope/f", O_RDONLY), -ENOENT);
	char longname[NAME_MAX + 8];
	memset(longname, 'n', sizeof longname - 1);
	longname[sizeof longname - 1] = 0;
	cr_assert_eq(ut_open_beneath_walk(tfd, longname, O_RDONLY), -ENAMETOOLONG);
}

Test(files, pread_full_and_pwrite_all)
{
	uint8_t big[70000], back[70010];
	for (size_t i = 0; i < sizeof big; i++)
		big[i] = (uint8_t)(i * 7);
	int fd = openat(tfd, "w", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ut_pwrite_all(fd, big, sizeof big, 10), 0);
	/* Asked for more than there is: the count up to the end of the file. */
	cr_assert_eq(ut_pread_full(fd, back, sizeof back, 10), (ssize_t)sizeof big);
	cr_assert_arr_eq(back, big, sizeof big);
	cr_assert_eq(ut_pread_full(fd, back, 10, 1000000), 0);
	close(fd);

	fd = openat(tfd, "w", O_RDONLY | O_CLOEXEC);
	cr_assert_eq(ut_pwrite_all(fd, big, 1, 0), -EBADF);
	close(fd);
	int p[2];
	cr_assert_eq(pipe(p), 0);
	cr_assert_eq(ut_pread_full(p[0], back, 1, 0), -ESPIPE);
	close(p[0]);
	close(p[1]);
}

/* ut_cpu_count: never more than the affinity mask allows, never 0. */
#include <sched.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

Test(cpus, within_the_affinity_mask)
{
	cpu_set_t set;
	cr_assert_eq(sched_getaffinity(0, sizeof set, &set), 0);
	unsigned n = ut_cpu_count();
	cr_assert_geq(n, 1u);
	cr_assert_leq(n, (unsigned)CPU_COUNT(&set));
}

/* ut_cgroup_cpus_at: the quota read from files laid out as /proc/self/cgroup and
 * /sys/fs/cgroup are, in a temporary directory. */
static char cg_root[64];

static void cg_write(const char *rel, const char *text)
{
	char path[512], dir[512];
	snprintf(path, sizeof path, "%s/%s", cg_root, rel);
	/* make the parent directories */
	for (char *p = path + strlen(cg_root) + 1; (p = strchr(p, '/')); p++) {
		snprintf(dir, sizeof dir, "%.*s", (int)(p - path), path);
		mkdir(dir, 0700);
	}
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f, "%s", path);
	fputs(text, f);
	cr_assert_eq(fclose(f), 0);
}

static unsigned cg_cpus(void)
{
	char self[128], root[128];
	snprintf(self, sizeof self, "%s/self-cgroup", cg_root);
	snprintf(root, sizeof root, "%s/sys", cg_root);
	return ut_cgroup_cpus_at(self, root);
}

static void cg_setup(void)
{
	snprintf(cg_root, sizeof cg_root, "/tmp/stillfs-unit-cg-XXXXXX");
	cr_assert_not_null(mkdtemp(cg_root));
	char sys[128];
	snprintf(sys, sizeof sys, "%s/sys", cg_root);
	cr_assert_eq(mkdir(sys, 0700), 0);
}

static void cg_teardown(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", cg_root);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(cgroup, .init = cg_setup, .fini = cg_teardown);

Test(cgroup, v2_quota_of_own_cgroup_rounded_up)
{
	cg_write("self-cgroup", "0::/app.slice/job.scope\n");
	cg_write("sys/app.slice/job.scope/cpu.max", "150000 100000\n");
	cr_assert_eq(cg_cpus(), 2u);
	cg_write("sys/app.slice/job.scope/cpu.max", "10000 100000\n");
	cr_assert_eq(cg_cpus(), 1u, "a fraction of a CPU is one");
	cg_write("sys/app.slice/job.scope/cpu.max", "400000 100000\n");
	cr_assert_eq(cg_cpus(), 4u);
}

Test(cgroup, v2_tightest_from_own_cgroup_up)
{
	cg_write("self-cgroup", "0::/app.slice/job.scope\n");
	cg_write("sys/app.slice/job.scope/cpu.max", "max 100000\n");
	cg_write("sys/app.slice/cpu.max", "300000 100000\n");
	cg_write("sys/cpu.max", "800000 100000\n");
	cr_assert_eq(cg_cpus(), 3u, "a parent's quota limits its children");
	cg_write("sys/app.slice/job.scope/cpu.max", "100000 100000\n");
	cr_assert_eq(cg_cpus(), 1u);
}

Test(cgroup, none_when_unlimited_missing_or_unreadable)
{
	cr_assert_eq(cg_cpus(), 0u, "no /proc/self/cgroup");
	cg_write("self-cgroup", "0::/\n");
	cr_assert_eq(cg_cpus(), 0u, "no cpu.max");
	cg_write("sys/cpu.max", "max 100000\n");
	cr_assert_eq(cg_cpus(), 0u);
	cg_write("sys/cpu.max", "garbage\n");
	cr_assert_eq(cg_cpus(), 0u);
	cg_write("sys/cpu.max", "100000 0\n");
	cr_assert_eq(cg_cpus(), 0u, "a zero period is no quota");
	cg_write("self-cgroup", "0::/gone\n");
	cg_write("sys/cpu.max", "200000 100000\n");
	cr_assert_eq(cg_cpus(), 2u, "a cgroup not mounted here still has its root's");
}

Test(cgroup, v1_cfs_quota)
{
	cg_write("self-cgroup", "12:memory:/user.slice\n4:cpu,cpuacct:/user.slice\n"
				"1:name=systemd:/user.slice/session-1.scope\n");
	cg_write("sys/cpu,cpuacct/user.slice/cpu.cfs_quota_us", "-1\n");
	cg_write("sys/cpu,cpuacct/user.slice/cpu.cfs_period_us", "100000\n");
	cr_assert_eq(cg_cpus(), 0u, "-1 is no quota");
	cg_write("sys/cpu,cpuacct/user.slice/cpu.cfs_quota_us", "250000\n");
	cr_assert_eq(cg_cpus(), 3u);
	cg_write("sys/cpu,cpuacct/cpu.cfs_quota_us", "50000\n");
	cg_write("sys/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
	cr_assert_eq(cg_cpus(), 1u, "the root's quota too");
	/* "cpuacct" alone is not the cpu controller */
	cg_write("self-cgroup", "3:cpuacct:/user.slice\n");
	cr_assert_eq(cg_cpus(), 0u);
}

Test(cgroup, v1_mounted_as_cpu_and_with_v2)
{
	cg_write("self-cgroup", "5:cpuacct,cpu:/a\n0::/b\n");
	cg_write("sys/cpu/a/cpu.cfs_quota_us", "200000\n");
	cg_write("sys/cpu/a/cpu.cfs_period_us", "100000\n");
	cr_assert_eq(cg_cpus(), 2u, "found through the \"cpu\" mount");
	cg_write("sys/b/cpu.max", "100000 100000\n");
	cr_assert_eq(cg_cpus(), 1u, "the tighter of both hierarchies");
}

/* ut_unread_since_change: a directory or file whose atime was set before its ctime counts as
 * unread until it is listed or read. */
Test(unread, listing_and_reading_are_seen)
{
	char dir[] = "/tmp/stillfs-unit-XXXXXX", file[64];
	cr_assert_not_null(mkdtemp(dir));
	snprintf(file, sizeof file, "%s/f", dir);
	int fd = open(file, O_WRONLY | O_CREAT, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "x", 1), 1);
	close(fd);
	struct timespec old[2] = { { 1000000000, 0 }, { 1000000000, 0 } };
	cr_assert_eq(utimensat(AT_FDCWD, file, old, 0), 0); /* ctime is now, atime long before */
	cr_assert_eq(utimensat(AT_FDCWD, dir, old, 0), 0);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY);
	cr_assert_geq(dfd, 0);
	if (!ut_atime_kept(dfd)) {
		close(dfd);
		unlink(file);
		rmdir(dir); /* /tmp mounted noatime, or a filesystem not trusted: nothing to test */
		cr_skip_test("atimes of %s are not trusted", dir);
	}
	struct stat st;
	cr_assert_eq(stat(dir, &st), 0);
	cr_assert(ut_unread_since_change(&st));
	cr_assert_eq(stat(file, &st), 0);
	cr_assert(ut_unread_since_change(&st));
	char buf[4];
	fd = open(file, O_RDONLY);
	cr_assert_eq(read(fd, buf, sizeof buf), 1);
	close(fd);
	cr_assert_eq(stat(file, &st), 0);
	cr_assert_not(ut_unread_since_change(&st), "a read went unseen");
	cr_assert_eq(stat(dir, &st), 0);
	cr_assert(ut_unread_since_change(&st), "opening a file by name is not listing its directory");
	DIR *d = opendir(dir);
	cr_assert_not_null(d);
	while (readdir(d))
		;
	closedir(d);
	cr_assert_eq(stat(dir, &st), 0);
	cr_assert_not(ut_unread_since_change(&st), "a listing went unseen");
	close(dfd);
	unlink(file);
	rmdir(dir);
}
