/* SPDX-License-Identifier: GPL-2.0-or-later */
/* stillctl's commands beyond snapshot and verify, and what they share with stillctl.c.
 * Prefixes: ctl_ (stillctl.c, ctl_mount.c), cc_ (ctl_cache.c, static). */
#ifndef STILL_CTL_H
#define STILL_CTL_H

#include "report.h"

/* Exit statuses of stillctl status beyond enum cap_exit: the daemon runs, but is not well. */
enum ctl_exit {
	CTL_EXIT_CAPTURE_FAILED = 5,  /* its last capture failed */
	CTL_EXIT_STALE = 6,           /* no generation, or one older than --max-age */
};

/* stillctl.c: print the help of one command ("status", "cache prune"; "cache": both). */
void ctl_help(const char *cmd);
/* One line on stderr pointing to --help; returns CAP_EXIT_USAGE. */
int ctl_usage_error(const char *what, const char *arg);
/* getopt returned '?' for cmd: one line naming the program, the command and the option. */
int ctl_bad_option(const char *cmd, char *const *argv);

/* ctl_cache.c: stillctl cache list|prune; argv[0] is "cache". Returns an exit status. */
int ctl_cache(int argc, char **argv);

#endif
