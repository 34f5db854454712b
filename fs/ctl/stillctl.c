/* SPDX-License-Identifier: GPL-2.0-or-later */
/* stillctl: take and check stillfs snapshots without FUSE; talk to a running stillfs. */
#include "capture.h"
#include "util.h"
#include "verify.h"
#include "ctl.h"
#include "ctl_mount.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char usage_text[] =
	"Usage: stillctl COMMAND [OPTIONS] ARGS\n"
	"\n"
	"Commands:\n"
	"  snapshot [OPTIONS] STORE DEST   write a consistent point-in-time snapshot of the live\n"
	"                                  directory STORE to DEST (which must not exist)\n"
	"      --previous DIR        share files unchanged since the earlier snapshot DIR\n"
	"      --recycle DIR         give up the earlier snapshot DIR (implies --previous DIR):\n"
	"                            the copies of databases that changed are moved out of it\n"
	"                            and only their changed pages rewritten; DIR is left\n"
	"                            without its manifest, to be deleted\n"
	"      --settle-timeout SEC  give up when no consistent cut is found within SEC (30)\n"
	"      --quiet-ms MS         files must have been still for MS milliseconds at the cut,\n"
	"                            so that a group of files rewritten one after another is\n"
	"                            not caught half-way (400; 0 turns this off)\n"
	"      --progress            report progress on stderr every second\n"
	"      --sync                flush the snapshot to disk before publishing it\n"
	"      --nice N              run at CPU niceness N so that the application keeps its\n"
	"                            cores (10; 0 leaves it as it is)\n"
	"      --uploads-before T    every upload of an earlier snapshot of STORE ended before\n"
	"                            T (seconds since the epoch; default: now): the cut falls\n"
	"                            in a later whole second, waited for if need be\n"
	"      -q, --quiet           no summary line\n"
	"  verify [OPTIONS] DIR            check a snapshot, or a downloaded copy, against its\n"
	"                                  manifest: every file present, same size and digest,\n"
	"                                  every database self-contained and intact\n"
	"      --ignore-extra        files the manifest does not list are not problems\n"
	"      --quick               skip PRAGMA integrity_check\n"
	"  status [OPTIONS] MOUNTPOINT     show the state of a running stillfs\n"
	"      --json                as JSON (\"schema\": 1; fields in stillctl(1))\n"
	"      --max-age SEC         exit 6 when there is no generation or the current one is\n"
	"                            older than SEC seconds (the last capture failed: exit 5)\n"
	"  metrics MOUNTPOINT              the state of a running stillfs as Prometheus metrics\n"
	"  refresh MOUNTPOINT              make a running stillfs capture a new generation\n"
	"  cache list [OPTIONS]            the caches stillfs daemons keep generations in: store,\n"
	"                                  whether it still exists, size, age, running daemon\n"
	"      --root DIR            where the caches are (default: /var/cache/stillfs as\n"
	"                            root, else $XDG_CACHE_HOME/stillfs or ~/.cache/stillfs)\n"
	"  cache prune [OPTIONS]           delete caches no running stillfs uses: those whose\n"
	"                                  store is gone, unless told otherwise\n"
	"      --root DIR            as for cache list\n"
	"      --missing-store       caches whose store is gone (the default)\n"
	"      --older-than SEC      caches not used for more than SEC seconds\n"
	"      --all                 every cache not in use\n"
	"      -n, --dry-run         only say what would be removed\n"
	"  help, --help                    this text;  --version\n"
	"\n"
	"Exit status:\n"
	"  0  success (verify: the copy matches its manifest)\n"
	"  1  failure: bad input, or verify found problems (listed on stdout)\n"
	"  2  usage error\n"
	"  3  snapshot: no consistent cut within the settle timeout (files named on stderr)\n"
	"  4  snapshot: I/O error, such as a full disk or an unreadable file\n"
	"  5  status: the last capture failed\n"
	"  6  status: no generation, or older than --max-age\n";

int ctl_usage_error(const char *what, const char *arg)
{
	fprintf(stderr, "stillctl: %s%s%s\nTry 'stillctl --help'.\n", what, arg ? " " : "",
		arg ? arg : "");
	return CAP_EXIT_USAGE;
}

int ctl_bad_option(const char *cmd, char *const *argv)
{
	/* getopt's own message (opterr is off) would name the command as if it were the program. */
	char shortopt[3] = { '-', (char)optopt, 0 };
	const char *last = argv[optind - 1];
	const char *opt = !strncmp(last, "--", 2) || !optopt ? last : shortopt;
	fprintf(stderr, "stillctl %s: unknown option or missing value: %s\nTry 'stillctl %s --help'.\n",
		cmd, opt, cmd);
	return CAP_EXIT_USAGE;
}

/* The blocks of usage_text for cmd: lines "  CMD ..." and the option lines below them. */
void ctl_help(const char *cmd)
{
	const char *cmds = strstr(usage_text, "Commands:\n"), *exits = strstr(usage_text, "Exit status:");
	size_t n = strlen(cmd);
	int in = 0, first = 1;
	for (const char *l = cmds; l && l < exits; l = strchr(l, '\n') + 1) {
		int len = (int)(strchr(l, '\n') - l);
		if (l[0] == ' ' && l[1] == ' ' && l[2] != ' ')
			in = !strncmp(l + 2, cmd, n) && (l[2 + n] == ' ' || l[2 + n] == '\n');
		if (in && first) {
			/* "  SYNOPSIS   what it does": the synopsis, then what it does below it */
			const char *gap = strstr(l + 2, "  ");
			int syn = gap && gap < l + len ? (int)(gap - l) - 2 : len - 2;
			printf("Usage: stillctl %.*s\n", syn, l + 2);
			if (syn < len - 2)
				printf("  %.*s\n", len - 2 - syn - (int)strspn(l + 2 + syn, " "),
				       l + 2 + syn + strspn(l + 2 + syn, " "));
		} else if (in)
			printf("%.*s\n", len, l);
		first &= !in;
	}
	printf("\n%s", exits);
}

static void on_signal(int sig)
{
	(void)sig;
	cap_interrupt();
}

/* --progress: a line on stderr each time the engine reports (about once a second). */
static void print_progress(const struct cap_progress *p, void *arg)
{
	char a[32], b[32];
	(void)arg;
	ut_format_bytes(p->bytes_done, a, sizeof a);
	ut_format_bytes(p->bytes_total, b, sizeof b);
	fprintf(stderr, "stillctl: progress: %s of %s, %" PRIu64 " files, %u retries\n", a, b,
		p->files_done, p->retries);
}

static int cmd_snapshot(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "previous", required_argument, NULL, 'p' },
		{ "recycle", required_argument, NULL, 'r' },
		{ "settle-timeout", required_argument, NULL, 't' },
		{ "quiet-ms", required_argument, NULL, 'Q' },
		{ "progress", no_argument, NULL, 'P' },
		{ "sync", no_argument, NULL, 's' },
		{ "nice", required_argument, NULL, 'n' },
		{ "uploads-before", required_argument, NULL, 'u' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 } };
	struct cap_opts o;
	struct cap_stats st;
	long nice_level = 10;
	int c;
	char *end;
	cap_opts_init(&o);
	while ((c = getopt_long(argc, argv, "+q", opts, NULL)) != -1) {
		switch (c) {
		case 'p': o.previous = optarg; break;
		case 'r': o.recycle = optarg; break;
		case 't':
			o.settle_timeout = strtod(optarg, &end);
			if (*end || end == optarg || o.settle_timeout <= 0)
				return ctl_usage_error("bad --settle-timeout", optarg);
			break;
		case 'Q': {
			unsigned long v = strtoul(optarg, &end, 10);
			if (*end || end == optarg || v > 60000)
				return ctl_usage_error("bad --quiet-ms", optarg);
			o.quiet_ms = (unsigned)v;
			break;
		}
		case 'P': o.progress = print_progress; break;
		case 's': o.sync = 1; break;
		case 'u': {
			struct timespec now;
			clock_gettime(CLOCK_REALTIME, &now);
			o.uploads_before = strtod(optarg, &end);
			if (*end || end == optarg || !(o.uploads_before > 0) ||
			    o.uploads_before > (double)now.tv_sec + 1)
				return ctl_usage_error("bad --uploads-before (seconds since the epoch, "
						   "not in the future)", optarg);
			break;
		}
		case 'n':
			nice_level = strtol(optarg, &end, 10);
			if (*end || end == optarg || nice_level < 0 || nice_level > 19)
				return ctl_usage_error("bad --nice (0 to 19)", optarg);
			break;
		case 'q': o.quiet = 1; break;
		case 'h': ctl_help("snapshot"); return 0;
		default: return ctl_bad_option("snapshot", argv);
		}
	}
	if (argc - optind != 2)
		return ctl_usage_error("snapshot needs STORE and DEST", NULL);
	o.store = argv[optind];
	o.dest = argv[optind + 1];
	if (o.recycle && !o.previous)
		o.previous = o.recycle;
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	/* Before the engine starts its threads, which inherit it. Relative to what we were
	 * started with; best effort (a container may forbid it). */
	if (nice_level > 0) {
		errno = 0;
		if (nice((int)nice_level) == -1 && errno)
			log_warn("--nice %ld: %s", nice_level, strerror(errno));
	}
	int rc = cap_snapshot(&o, &st);
	switch (rc) {
	case 0: return CAP_EXIT_OK;
	case -EAGAIN: return CAP_EXIT_UNSETTLED;
	case -ENOSPC: case -EIO: case -EACCES: case -EPERM: case -EDQUOT: case -EROFS:
		return CAP_EXIT_IO;
	default: return CAP_EXIT_FAIL;
	}
}

static int cmd_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "ignore-extra", no_argument, NULL, 'x' },
		{ "quick", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 } };
	struct vf_opts o = { 0 };
	int c;
	while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		switch (c) {
		case 'x': o.ignore_extra = 1; break;
		case 'k': o.quick = 1; break;
		case 'h': ctl_help("verify"); return 0;
		default: return ctl_bad_option("verify", argv);
		}
	}
	if (argc - optind != 1)
		return ctl_usage_error("verify needs one DIR", NULL);
	int rc = vf_verify(argv[optind], &o, stdout);
	return rc == 0 ? CAP_EXIT_OK : CAP_EXIT_FAIL;
}

int main(int argc, char **argv)
{
	log_init("stillctl");
	if (argc < 2)
		return ctl_usage_error("missing command", NULL);
	const char *cmd = argv[1];
	if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
		fputs(usage_text, stdout);
		return 0;
	}
	if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
		printf("stillctl %s\n", STILLFS_VERSION);
		return 0;
	}
	argc--;
	argv++;
	opterr = 0; /* ctl_bad_option reports */
	if (!strcmp(cmd, "snapshot"))
		return cmd_snapshot(argc, argv);
	if (!strcmp(cmd, "verify"))
		return cmd_verify(argc, argv);
	if (!strcmp(cmd, "status"))
		return ctl_status(argc, argv);
	if (!strcmp(cmd, "refresh"))
		return ctl_refresh(argc, argv);
	if (!strcmp(cmd, "metrics"))
		return ctl_metrics(argc, argv);
	if (!strcmp(cmd, "cache"))
		return ctl_cache(argc, argv);
	return ctl_usage_error("unknown command", cmd);
}
