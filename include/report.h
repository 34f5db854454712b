/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The status of a running stillfs in three forms, all made from its "key: value" text (the
 * status file): that text, JSON (schema REP_SCHEMA) and Prometheus metrics. One table says
 * which keys there are and what they hold, so the three never disagree. Prefix: rep_.
 * The fields are documented in stillctl(1) and docs/DEPLOYMENT.md. */
#ifndef STILL_REPORT_H
#define STILL_REPORT_H

#include <stddef.h>

/* Raised whenever a field of the JSON form is renamed, removed or changes type; new fields
 * may appear without it. */
#define REP_SCHEMA 1

/* The value of "key: value" in text, copied into out (truncated to len); 1 if found, else 0
 * with out = "". */
int rep_field(const char *text, const char *key, char *out, size_t len);

/* The JSON object for a status text: every field of the schema, in its order, typed, null
 * when absent or "none". A malloc'd string ending in a newline, or NULL (no memory). */
char *rep_json(const char *text);

/* Prometheus text exposition format (version 0.0.4) for a status text: stillfs_* metrics,
 * each with HELP and TYPE lines and a mountpoint label. now: the time to report as when the
 * status was taken (seconds since the epoch). Malloc'd, or NULL. */
char *rep_metrics(const char *text, double now);

#endif
