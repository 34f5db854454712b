/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The status of a running stillfs as JSON and as Prometheus metrics (see report.h). */
#include "report.h"

#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum rep_type { REP_STR, REP_INT, REP_NUM, REP_BOOL };

/* The schema: every key of the status text, in the order of the JSON object. A key the
 * text lacks, or whose value is "none", is null. */
static const struct rep_key {
	const char *key;
	enum rep_type type;
} rep_keys[] = {
	{ "schema", REP_INT },
	{ "stillfs", REP_STR },
	{ "pid", REP_INT },
	{ "store", REP_STR },
	{ "mountpoint", REP_STR },
	{ "cache", REP_STR },
	{ "passthrough", REP_BOOL },
	{ "request_threads_max", REP_INT },
	{ "request_threads", REP_INT },
	{ "requests_parked_bytes", REP_INT },
	{ "requests_parked", REP_INT },
	{ "requests_refused", REP_INT },
	{ "lock_waiters", REP_INT },
	{ "descriptors_nodes", REP_INT },
	{ "descriptors_handles", REP_INT },
	{ "descriptors_limit", REP_INT },
	{ "generation", REP_INT },
	{ "id", REP_STR },
	{ "cut", REP_STR },
	{ "cut_unix", REP_NUM },
	{ "age_s", REP_NUM },
	{ "capture_s", REP_NUM },
	{ "files", REP_INT },
	{ "bytes_copied", REP_INT },
	{ "bytes_shared", REP_INT },
	{ "bytes_cloned", REP_INT },
	{ "lock_max_s", REP_NUM },
	{ "retries", REP_INT },
	{ "pinned", REP_BOOL },
	{ "handles", REP_INT },
	{ "capturing", REP_BOOL },
	{ "capture_waiters", REP_INT },
	{ "capture_waiters_refused", REP_INT },
	{ "progress_phase", REP_STR },
	{ "progress_files_done", REP_INT },
	{ "progress_files_total", REP_INT },
	{ "progress_bytes_done", REP_INT },
	{ "progress_bytes_total", REP_INT },
	{ "progress_retries", REP_INT },
	{ "generations_kept", REP_INT },
	{ "handles_all", REP_INT },
	{ "captures_ok", REP_INT },
	{ "captures_failed", REP_INT },
	{ "last_capture", REP_STR },
	{ "generations_deleted", REP_INT },
	{ "spare_kept", REP_BOOL },
	{ "earlier_generation", REP_STR },
	{ "last_attempt_s", REP_NUM },
	{ "snapshot_max_age_s", REP_NUM },
	{ "snapshot_linger_s", REP_NUM },
	{ "last_error", REP_STR },
	{ "last_error_at", REP_STR },
};

int rep_field(const char *text, const char *key, char *out, size_t len)
{
	size_t k = strlen(key);
	out[0] = 0;
	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		if (!strncmp(l, key, k) && l[k] == ':' && l[k + 1] == ' ') {
			const char *v = l + k + 2, *e = strchr(v, '\n');
			size_t n = e ? (size_t)(e - v) : strlen(v);
			if (n >= len)
				n = len - 1;
			memcpy(out, v, n);
			out[n] = 0;
			return 1;
		}
	}
	return 0;
}

/* 1 and *b for the words the status text uses for yes and no. */
static int rep_bool(const char *v, int *b)
{
	if (!strcmp(v, "yes") || !strcmp(v, "on"))
		return *b = 1, 1;
	if (!strcmp(v, "no") || !strcmp(v, "off"))
		return *b = 0, 1;
	return 0;
}

/* 1 if all of v is a finite number as JSON writes them (and Prometheus reads them), which
 * is how it is then passed on. */
static int rep_number(const char *v)
{
	char *end;
	if (!((*v >= '0' && *v <= '9') || (*v == '-' && v[1] >= '0' && v[1] <= '9')) ||
	    strspn(v, "0123456789.eE+-") != strlen(v))
		return 0;
	double d = strtod(v, &end);
	return !*end && isfinite(d);
}

/* 1 if all of v is a whole number of digits. */
static int rep_whole(const char *v)
{
	if (*v == '-')
		v++;
	if (!*v)
		return 0;
	for (; *v; v++)
		if (*v < '0' || *v > '9')
			return 0;
	return 1;
}

/* Values come from the store's file names (last_error) and are cut to a buffer's size
 * anywhere: a byte that is not part of well-formed UTF-8 is written as the four characters
 * \xNN, as the status text writes control bytes, so that JSON and Prometheus text (both
 * UTF-8 only) stay readable by strict parsers. The two share the escapes of '"', '\\' and
 * newline; JSON also needs every other control byte escaped. */
static void rep_text(FILE *f, const char *s, int json)
{
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		size_t n = ut_utf8_len(p);
		if (!n)
			fprintf(f, "\\\\x%02x", *p);
		else if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", f);
		else if (json && (*p < 0x20 || *p == 0x7f))
			fprintf(f, "\\u%04x", *p);
		else
			fwrite(p, 1, n, f);
		p += n ? n : 1;
	}
}

static void rep_json_string(FILE *f, const char *s)
{
	fputc('"', f);
	rep_text(f, s, 1);
	fputc('"', f);
}

char *rep_json(const char *text)
{
	char *buf = NULL, v[4096];
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return NULL;
	fputc('{', f);
	for (size_t i = 0; i < sizeof rep_keys / sizeof rep_keys[0]; i++) {
		const struct rep_key *k = &rep_keys[i];
		int b;
		fprintf(f, "%s\"%s\": ", i ? ", " : "", k->key);
		if (!rep_field(text, k->key, v, sizeof v) || !strcmp(v, "none"))
			fputs("null", f);
		else if (k->type == REP_STR)
			rep_json_string(f, v);
		else if (k->type == REP_INT && rep_whole(v))
			fputs(v, f);
		else if (k->type == REP_NUM && rep_number(v))
			fputs(v, f);
		else if (k->type == REP_BOOL && rep_bool(v, &b))
			fputs(b ? "true" : "false", f);
		else
			fputs("null", f);    /* a value of the wrong kind is not passed on */
	}
	fputs("}\n", f);
	if (fclose(f)) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* One sample per row; rows of the same metric are next to each other, and only the first
 * carries help and type. value: the key whose value it is; a yes/no key gives 1 or 0. */
static const struct rep_metric {
	const char *name;
	const char *labels;        /* extra labels, or "" */
	const char *key;
	const char *type;
	const char *help;
} rep_metrics_tab[] = {
	{ "stillfs_captures_total", "result=\"ok\"", "captures_ok", "counter",
	  "Captures finished, by result, since the daemon started." },
	{ "stillfs_captures_total", "result=\"failed\"", "captures_failed", NULL, NULL },
	{ "stillfs_last_capture_success", "", "last_capture", "gauge",
	  "1 if the last capture succeeded, 0 if it failed (absent before the first)." },
	{ "stillfs_capturing", "", "capturing", "gauge", "1 while a capture runs." },
	{ "stillfs_last_attempt_seconds", "", "last_attempt_s", "gauge",
	  "Wall time of the last capture attempt, successful or not." },
	{ "stillfs_generation", "", "generation", "gauge",
	  "Sequence number of the generation .snapshot shows now." },
	{ "stillfs_generation_age_seconds", "", "age_s", "gauge",
	  "Seconds since the current generation was captured." },
	{ "stillfs_generation_cut_timestamp_seconds", "", "cut_unix", "gauge",
	  "The current generation's cut, in seconds since the epoch." },
	{ "stillfs_generation_capture_seconds", "", "capture_s", "gauge",
	  "How long the capture of the current generation took." },
	{ "stillfs_generation_lock_hold_seconds", "", "lock_max_s", "gauge",
	  "Longest time a database lock was held by the current generation's capture." },
	{ "stillfs_generation_copied_bytes", "", "bytes_copied", "gauge",
	  "Bytes the current generation's capture wrote anew." },
	{ "stillfs_generation_shared_bytes", "", "bytes_shared", "gauge",
	  "Bytes the current generation shares with the one before it." },
	{ "stillfs_generation_files", "", "files", "gauge",
	  "Regular files and databases in the current generation." },
	{ "stillfs_generation_retries", "", "retries", "gauge",
	  "Cut attempts the current generation's capture had to redo." },
	{ "stillfs_generation_pinned", "", "pinned", "gauge",
	  "1 while the current generation is pinned by a reader." },
	{ "stillfs_generations_kept", "", "generations_kept", "gauge",
	  "Generations in the cache that can still be read." },
	{ "stillfs_generations_deleted_total", "", "generations_deleted", "counter",
	  "Generations deleted since the daemon started." },
	{ "stillfs_snapshot_open_handles", "", "handles_all", "gauge",
	  "Open files and directories below .snapshot, all generations." },
	{ "stillfs_lock_waiters", "", "lock_waiters", "gauge",
	  "Blocking lock requests waiting now." },
	{ "stillfs_request_threads", "", "request_threads", "gauge",
	  "Request threads running now (at most max_threads)." },
	{ "stillfs_requests_parked_total", "", "requests_parked", "counter",
	  "Requests that waited for a thread: their user's share was in use." },
	{ "stillfs_requests_refused_total", "", "requests_refused", "counter",
	  "Requests refused (EAGAIN): their user had 64 MiB of requests waiting." },
	{ "stillfs_capture_waiters", "", "capture_waiters", "gauge",
	  "Openers of .snapshot waiting for the capture under way." },
	{ "stillfs_capture_waiters_refused_total", "", "capture_waiters_refused", "counter",
	  "Openers of .snapshot refused (EBUSY): too many were waiting for a capture." },
	{ "stillfs_descriptors", "kind=\"nodes\"", "descriptors_nodes", "gauge",
	  "Descriptors the daemon holds: of inodes the kernel knows, of open handles and lock "
	  "owners." },
	{ "stillfs_descriptors", "kind=\"handles\"", "descriptors_handles", NULL, NULL },
	{ "stillfs_descriptors_limit", "", "descriptors_limit", "gauge",
	  "The daemon's descriptor limit." },
	{ "stillfs_capture_progress_files", "state=\"done\"", "progress_files_done", "gauge",
	  "Files of the running capture done and in all." },
	{ "stillfs_capture_progress_files", "state=\"total\"", "progress_files_total", NULL, NULL },
	{ "stillfs_capture_progress_bytes", "state=\"done\"", "progress_bytes_done", "gauge",
	  "Bytes of the running capture done and in all." },
	{ "stillfs_capture_progress_bytes", "state=\"total\"", "progress_bytes_total", NULL, NULL },
};

static void rep_label_value(FILE *f, const char *s)
{
	rep_text(f, s, 0);
}

static void rep_sample(FILE *f, const char *name, const char *mnt, const char *labels,
		       const char *value)
{
	fprintf(f, "%s{mountpoint=\"", name);
	rep_label_value(f, mnt);
	fprintf(f, "\"%s%s} %s\n", *labels ? "," : "", labels, value);
}

char *rep_metrics(const char *text, double now)
{
	char *buf = NULL, mnt[4096], v[4096];
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return NULL;
	rep_field(text, "mountpoint", mnt, sizeof mnt);
	fputs("# HELP stillfs_info The running stillfs: version, store and cache.\n"
	      "# TYPE stillfs_info gauge\n", f);
	fprintf(f, "stillfs_info{mountpoint=\"");
	rep_label_value(f, mnt);
	rep_field(text, "stillfs", v, sizeof v);
	fputs("\",version=\"", f);
	rep_label_value(f, v);
	rep_field(text, "store", v, sizeof v);
	fputs("\",store=\"", f);
	rep_label_value(f, v);
	rep_field(text, "cache", v, sizeof v);
	fputs("\",cache=\"", f);
	rep_label_value(f, v);
	fputs("\"} 1\n", f);
	for (size_t i = 0; i < sizeof rep_metrics_tab / sizeof rep_metrics_tab[0]; i++) {
		const struct rep_metric *m = &rep_metrics_tab[i];
		int b;
		if (m->type)
			fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name, m->type);
		if (!rep_field(text, m->key, v, sizeof v))
			continue;
		if (!strcmp(m->key, "last_capture")) {
			if (!strcmp(v, "ok") || !strcmp(v, "failed"))
				rep_sample(f, m->name, mnt, m->labels, strcmp(v, "ok") ? "0" : "1");
		} else if (rep_bool(v, &b)) {
			rep_sample(f, m->name, mnt, m->labels, b ? "1" : "0");
		} else if (rep_number(v)) {
			rep_sample(f, m->name, mnt, m->labels, v);
		}
	}
	fputs("# HELP stillfs_status_timestamp_seconds When this status was taken.\n"
	      "# TYPE stillfs_status_timestamp_seconds gauge\n", f);
	snprintf(v, sizeof v, "%.3f", now);
	rep_sample(f, "stillfs_status_timestamp_seconds", mnt, "", v);
	if (fclose(f)) {
		free(buf);
		return NULL;
	}
	return buf;
}
