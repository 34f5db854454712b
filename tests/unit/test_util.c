/* ut_escape: what keeps a file name from breaking or forging a log or status line. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <string.h>

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

/* ut_dir_unlisted: a directory whose atime was set before its ctime is unlisted until read. */
Test(unlisted, listing_is_seen)
{
	char dir[] = "/tmp/stillfs-unit-XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	struct timespec old[2] = { { 1000000000, 0 }, { 1000000000, 0 } };
	cr_assert_eq(utimensat(AT_FDCWD, dir, old, 0), 0); /* ctime is now, atime long before */
	double when = 0;
	int r = ut_dir_unlisted(dir, &when);
	if (r == 0) {
		rmdir(dir); /* /tmp mounted noatime, or a filesystem not trusted: nothing to test */
		cr_skip_test("atimes of %s are not trusted", dir);
	}
	cr_assert_gt(when, 1000000000.0);
	DIR *d = opendir(dir);
	cr_assert_not_null(d);
	while (readdir(d))
		;
	closedir(d);
	cr_assert_eq(ut_dir_unlisted(dir, &when), 0, "a listing went unseen");
	rmdir(dir);
}
