/* SPDX-License-Identifier: GPL-2.0-or-later */
/* What the daemon tells those who watch it: the status file (as text and as JSON), the
 * Prometheus textfile of -o metrics_file, and systemd's notification socket (READY=1 once
 * mounted, STATUS= after each capture). The formats themselves are report.c's.
 *
 * sd_notify is a datagram to the socket named by $NOTIFY_SOCKET ('@': an abstract one), made
 * here in a few lines rather than linking libsystemd. The variable is taken out of the
 * environment at start-up, so that capture helpers never see it. */
#include "stillfs.h"
#include "fusecompat.h"

#include "report.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static struct sockaddr_un ob_sa;
static socklen_t ob_salen;         /* 0: no notification socket */
static int ob_dirfd = -1;          /* the directory of -o metrics_file */
static char *ob_base;              /* its name there */
static unsigned long ob_seen;      /* captures (ok + failed) reported so far */

void ob_init(void)
{
	const char *p = getenv("NOTIFY_SOCKET");
	size_t n = p ? strlen(p) : 0;
	if (n >= 2 && n < sizeof ob_sa.sun_path && (p[0] == '/' || p[0] == '@')) {
		ob_sa.sun_family = AF_UNIX;
		memcpy(ob_sa.sun_path, p, n);
		if (p[0] == '@')
			ob_sa.sun_path[0] = 0;
		ob_salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	}
	unsetenv("NOTIFY_SOCKET");
}

void ob_notify(const char *msg)
{
	if (!ob_salen)
		return;
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&ob_sa, ob_salen) < 0)
		log_warn("cannot notify systemd: %s", strerror(errno));
	close(fd);
}

/* A path as a status line: escaped (ut_escape), since a directory's name is whoever made it's
 * choice, and a newline in it would add a line of theirs, read before the daemon's own. */
static void ob_path_line(FILE *f, const char *key, const char *path)
{
	size_t len = 4 * strlen(path) + 1;
	char *esc = malloc(len);
	fprintf(f, "%s: %s\n", key, esc ? ut_escape(esc, len, path, 1) : "?");
	free(esc);
}

char *ob_status(int detailed, int json, size_t *len)
{
	char *gen = gen_status(sf.gm, detailed), *buf = NULL;
	size_t n = 0, handles, limit;
	FILE *f = open_memstream(&buf, &n);
	if (!f || !gen) {
		if (f)
			fclose(f);
		free(buf);
		free(gen);
		return NULL;
	}
	pthread_mutex_lock(&sf.mu);
	size_t nodes = sf.nfds;
	pthread_mutex_unlock(&sf.mu);
	sf_fd_counts(&handles, &limit);
	fprintf(f, "stillfs: %s\n", STILLFS_VERSION);
	fprintf(f, "schema: %d\n", REP_SCHEMA);
	fprintf(f, "pid: %ld\n", (long)getpid());
	ob_path_line(f, "store", sf.o.store);
	ob_path_line(f, "mountpoint", sf.o.mountpoint);
	ob_path_line(f, "cache", sf.o.cache);
	fprintf(f, "passthrough: %s\n", fc_passthrough() ? "on" : "off");
	fprintf(f, "request_threads_max: %u\n", sf.threads);
	lp_report(f);
	fprintf(f, "lock_waiters: %u\n", lk_waiting());
	fprintf(f, "descriptors_nodes: %zu\n", nodes);
	fprintf(f, "descriptors_handles: %zu\n", handles);
	fprintf(f, "descriptors_limit: %zu\n", limit);
	hp_report(f);
	fputs(gen, f);
	free(gen);
	if (fclose(f)) {
		free(buf);
		return NULL;
	}
	if (json) {
		char *j = rep_json(buf);
		free(buf);
		if (!(buf = j))
			return NULL;
		n = strlen(buf);
	}
	*len = n;
	return buf;
}

int ob_metrics_open(const char *dir, const char *base)
{
	ob_dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (ob_dirfd < 0 || !(ob_base = strdup(base))) {
		fprintf(stderr, "stillfs: metrics_file directory %s: %s\n", dir,
			strerror(ob_dirfd < 0 ? errno : ENOMEM));
		return -1;
	}
	return 0;
}

/* Replace the metrics file at once: written beside it under a hidden name (which the
 * textfile collector, reading *.prom only, skips), then renamed over it. Only in the
 * directory opened at start-up, and never through a symlink. */
static void ob_write_metrics(const char *text)
{
	char tmp[300];
	struct timespec rt = ut_realtime();
	char *m = rep_metrics(text, (double)rt.tv_sec + rt.tv_nsec / 1e9);
	int fd = -1, rc = 0;

	if (!m)
		return;
	snprintf(tmp, sizeof tmp, ".%.200s.tmp", ob_base);
	for (int i = 0; i < 2 && fd < 0; i++) {
		fd = openat(ob_dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (fd < 0 && errno == EEXIST && i == 0)
			unlinkat(ob_dirfd, tmp, 0);     /* left by a daemon that died writing */
	}
	if (fd < 0 || (rc = ut_pwrite_all(fd, (const uint8_t *)m, strlen(m), 0)) ||
	    renameat(ob_dirfd, tmp, ob_dirfd, ob_base) < 0) {
		log_warn("cannot write the metrics file %s: %s", ob_base,
			 strerror(rc ? -rc : errno));
		if (fd >= 0)
			unlinkat(ob_dirfd, tmp, 0);
	}
	if (fd >= 0)
		close(fd);
	free(m);
}

void ob_tick(int force)
{
	char ok[32], failed[32], v[128], id[64], err[160];
	size_t len;
	if (!ob_salen && ob_dirfd < 0)
		return;
	char *text = ob_status(0, 0, &len);
	if (!text)
		return;
	rep_field(text, "captures_ok", ok, sizeof ok);
	rep_field(text, "captures_failed", failed, sizeof failed);
	unsigned long done = strtoul(ok, NULL, 10) + strtoul(failed, NULL, 10);
	if (done != ob_seen || force) {
		ob_seen = done;
		if (ob_dirfd >= 0)
			ob_write_metrics(text);
		char msg[512];
		rep_field(text, "generation", v, sizeof v);
		rep_field(text, "id", id, sizeof id);
		rep_field(text, "last_capture", ok, sizeof ok);
		if (!strcmp(ok, "failed")) {
			rep_field(text, "last_error", err, sizeof err);
			const char *why = err;
			if (!strncmp(why, "capture failed: ", 16))
				why += 16;
			snprintf(msg, sizeof msg, "STATUS=last capture failed (%s); serving %s%s",
				 why, strcmp(v, "none") ? "generation " : "no generation",
				 strcmp(v, "none") ? v : "");
		} else if (strcmp(v, "none")) {
			rep_field(text, "capture_s", err, sizeof err);
			snprintf(msg, sizeof msg, "STATUS=serving generation %s (%s), captured in %s s",
				 v, id, err);
		} else {
			/* As the status has it, escaped: a newline would start an assignment of
			 * its own (MAINPID=, READY=) in the datagram. */
			rep_field(text, "mountpoint", err, sizeof err);
			snprintf(msg, sizeof msg, "STATUS=mounted %s, no generation captured yet", err);
		}
		ob_notify(msg);
	}
	free(text);
}
