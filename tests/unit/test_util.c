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
