/* SPDX-License-Identifier: GPL-2.0-or-later */
/* rep_json and rep_metrics: the status text made into JSON and Prometheus metrics. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"

static const char status[] =
	"stillfs: 0.1.0\n"
	"schema: 1\n"
	"pid: 42\n"
	"store: /srv/a \"b\"\\c\n"
	"mountpoint: /mnt/x\n"
	"passthrough: off\n"
	"last_capture: failed\n"
	"generation: 3\n"
	"age_s: 1.5\n"
	"pinned: yes\n"
	"files: 12x\n"
	"captures_ok: 2\n"
	"captures_failed: 1\n"
	"last_error: capture failed: \\x1b tab\there\n";

Test(report, field)
{
	char v[8];
	cr_assert_eq(rep_field(status, "generation", v, sizeof v), 1);
	cr_assert_str_eq(v, "3");
	cr_assert_eq(rep_field(status, "gen", v, sizeof v), 0);
	cr_assert_str_eq(v, "");
	rep_field(status, "stillfs", v, 4);         /* cut to fit */
	cr_assert_str_eq(v, "0.1");
}

Test(report, json_types_nulls_and_escapes)
{
	char *j = rep_json(status);
	cr_assert_not_null(j);
	cr_assert(strncmp(j, "{\"schema\": 1, \"stillfs\": \"0.1.0\", \"pid\": 42, ", 45) == 0, "%s", j);
	cr_assert(strstr(j, "\"store\": \"/srv/a \\\"b\\\"\\\\c\""), "%s", j);
	cr_assert(strstr(j, "\"passthrough\": false"), "%s", j);
	cr_assert(strstr(j, "\"pinned\": true"), "%s", j);
	cr_assert(strstr(j, "\"age_s\": 1.5"), "%s", j);
	cr_assert(strstr(j, "\"cache\": null"), "%s", j);      /* absent */
	cr_assert(strstr(j, "\"files\": null"), "%s", j);      /* not a number */
	cr_assert(strstr(j, "\"last_error\": \"capture failed: \\\\x1b tab\\u0009here\""), "%s", j);
	cr_assert(j[strlen(j) - 1] == '\n' && j[strlen(j) - 2] == '}');
	free(j);
}

Test(report, metrics_help_type_and_labels)
{
	char *m = rep_metrics(status, 1234.5);
	cr_assert_not_null(m);
	cr_assert(strstr(m, "# HELP stillfs_captures_total "), "%s", m);
	cr_assert(strstr(m, "# TYPE stillfs_captures_total counter\n"
			    "stillfs_captures_total{mountpoint=\"/mnt/x\",result=\"ok\"} 2\n"
			    "stillfs_captures_total{mountpoint=\"/mnt/x\",result=\"failed\"} 1\n"), "%s", m);
	cr_assert(strstr(m, "stillfs_last_capture_success{mountpoint=\"/mnt/x\"} 0\n"), "%s", m);
	cr_assert(strstr(m, "stillfs_generation_pinned{mountpoint=\"/mnt/x\"} 1\n"), "%s", m);
	cr_assert(strstr(m, "store=\"/srv/a \\\"b\\\"\\\\c\""), "%s", m);
	cr_assert_null(strstr(m, "stillfs_generation_files{"), "%s", m);   /* no number, no sample */
	cr_assert(strstr(m, "stillfs_status_timestamp_seconds{mountpoint=\"/mnt/x\"} 1234.500\n"), "%s", m);
	/* Every TYPE once, HELP before it. */
	for (const char *p = m; (p = strstr(p, "# TYPE ")); p++) {
		char name[128];
		cr_assert_eq(sscanf(p, "# TYPE %127s", name), 1);
		char help[160];
		snprintf(help, sizeof help, "# HELP %s ", name);
		cr_assert(strstr(m, help) && strstr(m, help) < p, "no HELP before TYPE of %s", name);
		char type[160];
		snprintf(type, sizeof type, "# TYPE %s ", name);
		cr_assert_null(strstr(p + 1, type), "two TYPE lines for %s", name);
	}
	free(m);
}

/* Names from the store are any bytes, cut anywhere: what is not well-formed UTF-8 (a stray
 * byte, a sequence cut short, an overlong form, a surrogate) comes out as \xNN text; what is
 * passes through as it is. */
Test(report, not_utf8_escaped)
{
	static const char text[] =
		"mountpoint: /mnt/\xff\n"
		"last_error: a\xff" "b \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xc0\xaf \xed\xa0\x80 end\xe2\x82\n";
	char *j = rep_json(text), *m = rep_metrics(text, 1);
	cr_assert_not_null(j);
	cr_assert_not_null(m);
	cr_assert(strstr(j, "\"last_error\": \"a\\\\xffb \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 "
			    "\\\\xc0\\\\xaf \\\\xed\\\\xa0\\\\x80 end\\\\xe2\\\\x82\""), "%s", j);
	cr_assert(strstr(j, "\"mountpoint\": \"/mnt/\\\\xff\""), "%s", j);
	cr_assert(strstr(m, "{mountpoint=\"/mnt/\\\\xff\""), "%s", m);
	for (const unsigned char *p = (const unsigned char *)j; *p; p++)
		cr_assert(*p < 0x80 || *p == 0xc3 || *p == 0xa9 || *p == 0xe2 || *p == 0x82 ||
			  *p == 0xac || *p == 0xf0 || *p == 0x9f || *p == 0x98 || *p == 0x80,
			  "a stray byte 0x%02x in %s", *p, j);
	free(j);
	free(m);
}
