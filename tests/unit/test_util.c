/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ut_escape: what keeps a file name from breaking or forging a log or status line. */
#include <criterion/criterion.h>
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
