/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Captures run in a helper process: `stillfs --capture-helper` (this binary, through
 * /proc/self/exe) calls cap_snapshot.
 *
 * Why a process: the engine holds SQLite connections on the store's databases, and SQLite
 * relies on POSIX locks, which belong to a process and are all dropped when that process
 * closes *any* descriptor of the file. The daemon opens and closes store files all the time
 * for passthrough; in the same process it would silently drop the engine's locks.
 *
 * Protocol (argv): --capture-helper --settle-timeout S --nice N --writeback W TIMES STORE DEST
 * [PREVIOUS [RECYCLE]]
 *   W is /proc/self/fd/M of the mount's own root (hp_open_mount), whose page cache the
 *   engine writes back (cap_opts.writeback), or "-" when the mountpoint no longer leads to
 *   the mount and no file is open for writing without passthrough.
 *   TIMES is UPLOADS_BEFORE,REDATE_AFTER,REDATE_UNTIL (cap_opts).
 *   STORE is /proc/self/fd/N of the store descriptor the daemon opened before mounting
 *   (inherited, so a store covered by our own mount is still reached), or of the mount's
 *   own root while a WAL index is open through it, DEST, PREVIOUS and
 *   RECYCLE (cap_opts.recycle) are /proc/self/fd/M/NAME below the inherited cache descriptor.
 *   stdin: a pipe the daemon never writes; EOF means the daemon is gone, so give up.
 *   stdout: progress lines, "progress PHASE FILES_DONE FILES_TOTAL BYTES_DONE BYTES_TOTAL
 *           RETRIES" (what cap_progress says: at each phase, and about once a second), then
 *           one result line, "ok id=... cut=S.N dur=... lock=... files=... copied=...
 *           linked=... retries=..." or "err ERRNO".
 *   stderr: the engine's log lines; the daemon logs them and keeps the last as the reason.
 *   exit status: enum cap_exit. */
#include "stillfs.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static pthread_mutex_t hp_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic pid_t hp_pid;        /* set and cleared under hp_mu; read without it too */
static int hp_last;                /* the last capture: 0 none yet, 1 ok, -1 failed (hp_mu) */
/* The running capture's last progress line, if it sent one (hp_mu). */
static struct {
	int valid;
	char phase[16];
	uint64_t files_done, files_total, bytes_done, bytes_total;
	unsigned retries;
} hp_prog;

void hp_report(FILE *f)
{
	pthread_mutex_lock(&hp_mu);
	fprintf(f, "last_capture: %s\n", hp_last > 0 ? "ok" : hp_last < 0 ? "failed" : "none");
	if (hp_prog.valid)
		fprintf(f, "progress_phase: %s\nprogress_files_done: %" PRIu64 "\n"
			"progress_files_total: %" PRIu64 "\nprogress_bytes_done: %" PRIu64 "\n"
			"progress_bytes_total: %" PRIu64 "\nprogress_retries: %u\n", hp_prog.phase,
			hp_prog.files_done, hp_prog.files_total, hp_prog.bytes_done,
			hp_prog.bytes_total, hp_prog.retries);
	pthread_mutex_unlock(&hp_mu);
}

/* Take the complete progress lines out of the helper's stdout so far (buf, *len), keeping
 * what else is there (the result line) in order. */
static void hp_take_progress(char *buf, size_t *len)
{
	size_t r = 0, w = 0;
	while (r < *len) {
		char *nl = memchr(buf + r, '\n', *len - r);
		if (!nl)
			break;
		size_t n = (size_t)(nl - (buf + r)) + 1;
		char phase[16];
		uint64_t fd, ft, bd, bt;
		unsigned rt;
		if (!strncmp(buf + r, "progress ", 9)) {
			*nl = 0;
			if (sscanf(buf + r, "progress %15s %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
				   " %u", phase, &fd, &ft, &bd, &bt, &rt) == 6) {
				pthread_mutex_lock(&hp_mu);
				snprintf(hp_prog.phase, sizeof hp_prog.phase, "%s", phase);
				hp_prog.files_done = fd;
				hp_prog.files_total = ft;
				hp_prog.bytes_done = bd;
				hp_prog.bytes_total = bt;
				hp_prog.retries = rt;
				hp_prog.valid = 1;
				pthread_mutex_unlock(&hp_mu);
			}
		} else {
			memmove(buf + w, buf + r, n);
			w += n;
		}
		r += n;
	}
	memmove(buf + w, buf + r, *len - r);
	*len = w + (*len - r);
}

void hp_kill(void)
{
	pthread_mutex_lock(&hp_mu);
	if (hp_pid > 0)
		kill(hp_pid, SIGTERM);
	pthread_mutex_unlock(&hp_mu);
}

int hp_is_helper(pid_t tid)
{
	char path[64];
	pthread_mutex_lock(&hp_mu);
	pid_t h = hp_pid;
	pthread_mutex_unlock(&hp_mu);
	if (h <= 0)
		return 0;
	snprintf(path, sizeof path, "/proc/%ld/task/%ld", (long)h, (long)tid);
	return tid == h || access(path, F_OK) == 0;
}

int hp_is_helper_pid(pid_t tid)
{
	return tid > 0 && tid == atomic_load(&hp_pid);
}

static int hp_spawn(char *const argv[], int life, int out, int err, int mnt, pid_t *pid)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, deflt;
	int rc;

	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&at);
	posix_spawn_file_actions_adddup2(&fa, life, 0);
	posix_spawn_file_actions_adddup2(&fa, out, 1);
	posix_spawn_file_actions_adddup2(&fa, err, 2);
	/* Same number on both sides: only clears close-on-exec, which every other descriptor
	 * of the daemon keeps (above all /dev/fuse: a helper holding it would keep a dead
	 * daemon's mount alive). */
	posix_spawn_file_actions_adddup2(&fa, sf.storefd, sf.storefd);
	posix_spawn_file_actions_adddup2(&fa, sf.cachefd, sf.cachefd);
	if (mnt >= 0)
		posix_spawn_file_actions_adddup2(&fa, mnt, mnt);
	sigemptyset(&none);
	sigemptyset(&deflt);
	sigaddset(&deflt, SIGTERM);
	sigaddset(&deflt, SIGINT);
	sigaddset(&deflt, SIGHUP);
	sigaddset(&deflt, SIGPIPE);
	sigaddset(&deflt, SIGUSR2);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &deflt);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	rc = posix_spawn(pid, "/proc/self/exe", &fa, &at, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	return -rc;
}

/* Our own mount's root, for the helper to read the store through. Its path may lead
 * elsewhere by now (a user who can rename a directory above it can put anything there), so
 * it is opened without following a last symlink and accepted only as the root of a
 * fuse.stillfs mount made by our user: a mount no other user can make. Opened for one
 * capture at a time: a descriptor kept open would make the mount busy for umount. */
static int hp_open_mount(int *out)
{
	uid_t owner;
	int fd = open(sf.o.mountpoint, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), rc;
	*out = -1;
	if (fd < 0)
		return -errno;
	if ((rc = ut_stillfs_mount(fd, &owner)) || owner != geteuid()) {
		close(fd);
		return rc ? rc : -EXDEV;
	}
	*out = fd;
	return 0;
}

/* The helper reaches the store, the cache and (mnt >= 0) the mount's root through our
 * descriptors (/proc/self/fd/N); the user knows them by their paths. */
static void hp_unproc(const char *msg, int mnt, char *out, size_t len)
{
	char fds[3][32];
	const char *paths[3] = { sf.o.store, sf.o.cache, sf.o.mountpoint };
	int nfds = mnt >= 0 ? 3 : 2;
	size_t o = 0;

	snprintf(fds[0], sizeof fds[0], "/proc/self/fd/%d", sf.storefd);
	snprintf(fds[1], sizeof fds[1], "/proc/self/fd/%d", sf.cachefd);
	snprintf(fds[2], sizeof fds[2], "/proc/self/fd/%d", mnt);
	while (*msg && o + 1 < len) {
		int hit = -1;
		for (int i = 0; i < nfds && hit < 0; i++) {
			size_t n = strlen(fds[i]);
			if (!strncmp(msg, fds[i], n) && !(msg[n] >= '0' && msg[n] <= '9'))
				hit = i;
		}
		if (hit >= 0) {
			o += (size_t)snprintf(out + o, len - o, "%s", paths[hit]);
			msg += strlen(fds[hit]);
		} else {
			out[o++] = *msg++;
		}
	}
	out[o < len ? o : len - 1] = 0;
}

/* Log complete lines of the helper's stderr; keep the last one as the failure reason. */
static void hp_log_lines(char *buf, size_t *len, int final, int mnt, char *last, size_t lastlen)
{
	char *start = buf, *nl;
	while ((nl = memchr(start, '\n', *len - (size_t)(start - buf))) || (final && start < buf + *len)) {
		if (!nl)
			nl = buf + *len;
		*nl = 0;
		/* The engine prefixes its program name; ours says enough. */
		const char *msg = start;
		if (!strncmp(msg, "stillfs: ", 9))
			msg += 9;
		if (*msg) {
			char clear[1024];
			hp_unproc(msg, mnt, clear, sizeof clear);
			/* The engine's warnings (skipped files) are warnings in our log too. Its
			 * lines are escaped already (log_relay, ut_escape). */
			if (!strncmp(clear, "warning: ", 9))
				log_relay(LOG_KIND_WARN, "capture: %s", clear + 9);
			else
				log_relay(LOG_KIND_INFO, "capture: %s", clear);
			ut_escape(last, lastlen, clear, 0);
		}
		start = nl + 1;
		if (start > buf + *len)
			start = buf + *len;
	}
	*len -= (size_t)(start - buf);
	memmove(buf, start, *len);
}

static int hp_parse(const char *line, struct cap_stats *st)
{
	long long sec;
	long nsec;
	int e;
	if (sscanf(line, "err %d", &e) == 1)
		return e > 0 ? -e : -EIO;
	if (sscanf(line, "ok id=%47s cut=%lld.%ld dur=%lf lock=%lf files=%" SCNu64
		   " copied=%" SCNu64 " linked=%" SCNu64 " cloned=%" SCNu64 " retries=%u"
		   " dated=%" SCNd64,
		   st->id, &sec, &nsec, &st->duration_s, &st->lock_max_s, &st->files,
		   &st->bytes_copied, &st->bytes_linked, &st->bytes_cloned, &st->retries,
		   &st->dated_until) != 11)
		return -EPROTO;
	st->cut.tv_sec = (time_t)sec;
	st->cut.tv_nsec = nsec;
	return 0;
}

int hp_capture(void *arg, const char *name, const char *prev, const char *recycle,
	       double uploads_before, int64_t redate_after, int64_t redate_until,
	       struct cap_stats *st, char *err, size_t errlen)
{
	int life[2] = { -1, -1 }, out[2] = { -1, -1 }, errp[2] = { -1, -1 };
	char store[PATH_MAX], dest[64], prevp[64], recyp[64], settle[32], before[80], nice[16],
		wb[32] = "-", extents[32] = "-", obuf[1024], ebuf[4096];
	size_t olen = 0, elen = 0;
	pid_t pid = -1;
	int rc, status, mnt = -1;
	(void)arg;

	err[0] = 0;
	/* A store through a shared mapping of a file without passthrough waits in the mount's
	 * page cache until the kernel writes it back to us: the engine has it written back
	 * before it judges a cut. Without the mount that is done only if no such file is open. */
	if (hp_open_mount(&mnt) && atomic_load(&sf.wb_handles) > 0) {
		rc = -EXDEV;
		snprintf(err, errlen, "the mountpoint %s does not lead to this mount any more "
			 "(moved?): cannot write back what is mapped through it", sf.o.mountpoint);
		goto out;
	}
	if (mnt >= 0)
		snprintf(wb, sizeof wb, "/proc/self/fd/%d", mnt);
	if (atomic_load(&sf.shm_handles) > 0) {
		/* An SQLite WAL index (-shm) is mapped through the mount: its current contents
		 * live in the mount's page cache, not in the store's, so the engine must read the
		 * databases through the mount to see them (and to leave its own marks where
		 * the application sees them). A -shm handle counts in wb_handles too when it
		 * was opened for writing; one opened read-only needs the mount all the same. */
		if (mnt < 0) {
			rc = -EXDEV;
			snprintf(err, errlen, "the mountpoint %s does not lead to this mount any more "
				 "(moved?): cannot read the store through it", sf.o.mountpoint);
			goto out;
		}
		snprintf(store, sizeof store, "/proc/self/fd/%d", mnt);
		/* FUSE has no extent maps: those of the files are read below the store */
		snprintf(extents, sizeof extents, "/proc/self/fd/%d", sf.storefd);
	} else {
		snprintf(store, sizeof store, "/proc/self/fd/%d", sf.storefd);
	}
	snprintf(dest, sizeof dest, "/proc/self/fd/%d/%s", sf.cachefd, name);
	snprintf(prevp, sizeof prevp, "/proc/self/fd/%d/%s", sf.cachefd, prev ? prev : "");
	snprintf(recyp, sizeof recyp, "/proc/self/fd/%d/%s", sf.cachefd, recycle ? recycle : "");
	snprintf(settle, sizeof settle, "%g", sf.o.settle);
	snprintf(before, sizeof before, "%.3f,%" PRId64 ",%" PRId64, uploads_before, redate_after,
		 redate_until);
	snprintf(nice, sizeof nice, "%d", sf.o.capture_nice);
	char *argv[] = { "stillfs", "--capture-helper", "--settle-timeout", settle, "--nice", nice,
			 "--writeback", wb, "--extents", extents, before, store, dest,
			 prev ? prevp : NULL, NULL, NULL };
	if (prev && recycle)
		argv[14] = recyp;

	if (pipe2(life, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot start the capture helper: %s", strerror(errno));
		goto out;
	}
	pthread_mutex_lock(&hp_mu);
	rc = hp_spawn(argv, life[0], out[1], errp[1], mnt, &pid);
	if (!rc)
		hp_pid = pid;
	pthread_mutex_unlock(&hp_mu);
	if (rc) {
		snprintf(err, errlen, "cannot start the capture helper: %s", strerror(-rc));
		goto out;
	}
	close(life[0]);
	close(out[1]);
	close(errp[1]);
	life[0] = out[1] = errp[1] = -1;

	struct pollfd pf[2] = { { .fd = out[0], .events = POLLIN }, { .fd = errp[0], .events = POLLIN } };
	while (pf[0].fd >= 0 || pf[1].fd >= 0) {
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[0].revents) {
			ssize_t n = read(out[0], obuf + olen, sizeof obuf - 1 - olen);
			if (n > 0) {
				olen += (size_t)n;
				hp_take_progress(obuf, &olen);
			} else if (n == 0 || errno != EINTR) {
				pf[0].fd = -1;
			}
		}
		if (pf[1].revents) {
			ssize_t n = read(errp[0], ebuf + elen, sizeof ebuf - 1 - elen);
			if (n > 0) {
				elen += (size_t)n;
				if (elen == sizeof ebuf - 1)    /* an endless line: cut it */
					hp_log_lines(ebuf, &elen, 1, mnt, err, errlen);
				else
					hp_log_lines(ebuf, &elen, 0, mnt, err, errlen);
			} else if (n == 0 || errno != EINTR) {
				pf[1].fd = -1;
			}
		}
	}
	hp_log_lines(ebuf, &elen, 1, mnt, err, errlen);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	obuf[olen] = 0;
	rc = hp_parse(obuf, st);
	if (rc == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		rc = -EIO;
	if (rc && WIFSIGNALED(status)) {
		rc = -EINTR;
		snprintf(err, errlen, "capture helper killed by signal %d", WTERMSIG(status));
	} else if (rc && !err[0]) {
		snprintf(err, errlen, "capture helper failed (exit status %d)",
			 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	}
out:
	pthread_mutex_lock(&hp_mu);
	hp_pid = 0;
	hp_last = rc ? -1 : 1;
	hp_prog.valid = 0;
	pthread_mutex_unlock(&hp_mu);
	if (mnt >= 0)
		close(mnt);
	for (int i = 0; i < 2; i++) {
		if (life[i] >= 0)
			close(life[i]);
		if (out[i] >= 0)
			close(out[i]);
		if (errp[i] >= 0)
			close(errp[i]);
	}
	return rc;
}

/* ---- the helper process itself ---- */

/* What the engine needs of root: read every store file and list every directory
 * (DAC_READ_SEARCH); give its copies the store's owners (CHOWN), modes, times and links
 * between generations (FOWNER), set-group-ID bits included (FSETID); and write to and move
 * copies that already carry other owners and read-only modes, which recycling an earlier
 * generation's database copies does (DAC_OVERRIDE; without it captures still succeed, but
 * copy such databases whole); and go back to the daemon's CPU priority while it holds
 * databases, after copying at a lower one (SYS_NICE; cap_opts.hold_nice). */
#define HP_CAPS ((1ULL << CAP_CHOWN) | (1ULL << CAP_DAC_OVERRIDE) | \
		 (1ULL << CAP_DAC_READ_SEARCH) | (1ULL << CAP_FOWNER) | (1ULL << CAP_FSETID) | \
		 (1ULL << CAP_SYS_NICE))

/* Give up every other privilege, for good, before any thread exists (capabilities are per
 * thread; new ones inherit them). A daemon run by a user has none to give up, but still
 * gets no new ones. */
static int hp_drop_privileges(void)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	uint64_t have, keep;

	if (syscall(SYS_capget, &hdr, d) < 0)
		return -errno;
	have = (uint64_t)d[0].permitted | (uint64_t)d[1].permitted << 32;
	keep = have & HP_CAPS;
	if (have & (1ULL << CAP_SETPCAP)) {
		/* No execve may bring back more (root's implicit capabilities included). */
		if (prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED |
			  SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED |
			  SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED,
			  0, 0, 0) < 0)
			return -errno;
		for (unsigned long c = 0; c < 64; c++)
			if (!(HP_CAPS & (1ULL << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0) {
				if (errno == EINVAL)    /* past the kernel's last capability */
					break;
				return -errno;
			}
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return -errno;
	memset(d, 0, sizeof d);
	d[0].effective = d[0].permitted = (uint32_t)keep;
	d[1].effective = d[1].permitted = (uint32_t)(keep >> 32);
	if (syscall(SYS_capset, &hdr, d) < 0)
		return -errno;
	/* Not dumpable: no core of what it read, and only CAP_SYS_PTRACE may attach to it. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		return -errno;
	return 0;
}

/* cap_opts.writeback_inodes: what the daemon lists for us alone in the status file at the
 * root of its mount (fh_status_text). */
static ssize_t hp_writeback_inodes(void *arg, uint64_t **out)
{
	char path[PATH_MAX], *line = NULL;
	size_t cap = 0, n = 0, room = 0;
	ssize_t rc = -EPROTO;
	uint64_t *v = NULL;

	snprintf(path, sizeof path, "%s/" SF_STATUS, (const char *)arg);
	FILE *f = fopen(path, "re");
	if (!f)
		return -errno;
	while (rc == -EPROTO && getline(&line, &cap, f) > 0) {
		if (strncmp(line, "writeback_inodes:", 17))
			continue;
		rc = 0;
		for (char *p = line + 17, *end;; p = end) {
			unsigned long long x = strtoull(p, &end, 10);
			if (end == p)
				break;
			if (n == room) {
				uint64_t *more = realloc(v, (room = room * 2 + 16) * sizeof *v);
				if (!more) {
					rc = -ENOMEM;
					break;
				}
				v = more;
			}
			v[n++] = x;
		}
	}
	free(line);
	fclose(f);
	if (rc) {
		free(v);
		return rc;
	}
	*out = v;
	return (ssize_t)n;
}

/* One line per report, for hp_take_progress; the engine's phases are single words. */
static void hp_progress(const struct cap_progress *p, void *arg)
{
	(void)arg;
	printf("progress %s %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %u\n", p->phase,
	       p->files_done, p->files_total, p->bytes_done, p->bytes_total, p->retries);
	fflush(stdout);
}

static void *hp_lifeline(void *arg)
{
	char c;
	(void)arg;
	for (;;) {
		ssize_t n = read(0, &c, 1);
		if (n == 0 || (n < 0 && errno != EINTR))
			break;
	}
	/* The daemon is gone: stop the engine (it cleans up what it made), and do not wait
	 * forever for it to notice. */
	cap_interrupt();
	sleep(10);
	_exit(CAP_EXIT_FAIL);
	return NULL;
}

int hp_main(int argc, char **argv)
{
	struct cap_opts o;
	struct cap_stats st;
	pthread_t t;

	log_init("stillfs");
	/* Started as /proc/self/exe, it would show in ps and top as "exe". */
	prctl(PR_SET_NAME, "stillfs-capture", 0, 0, 0);
	/* Once the daemon is gone our log lines and result go to pipes nobody reads: a write
	 * must fail, not kill us (SIGPIPE) before the engine has removed what it made. */
	signal(SIGPIPE, SIG_IGN);
	if (argc < 13 || argc > 15 || strcmp(argv[2], "--settle-timeout") ||
	    strcmp(argv[4], "--nice") || strcmp(argv[6], "--writeback") ||
	    strcmp(argv[8], "--extents")) {
		fprintf(stderr, "stillfs: --capture-helper is for the daemon's own use\n");
		return CAP_EXIT_USAGE;
	}
	cap_opts_init(&o);
	o.settle_timeout = atof(argv[3]);
	/* Before any thread exists: the engine's threads inherit it. Best effort. While it holds
	 * databases, the capture goes back to the daemon's own niceness (cap_opts.hold_nice, as
	 * cap_opts_init found it: needs CAP_SYS_NICE, which it keeps when the daemon has it). */
	errno = 0;
	if (atoi(argv[5]) && setpriority(PRIO_PROCESS, 0, atoi(argv[5])) < 0)
		log_warn("capture priority %s: %s", argv[5], strerror(errno));
	int rc = hp_drop_privileges();
	if (rc) {
		fprintf(stderr, "stillfs: capture helper: cannot drop privileges: %s\n", strerror(-rc));
		printf("err %d\n", -rc);
		return CAP_EXIT_FAIL;
	}
	long long ra = 0, ru = 0;
	if (sscanf(argv[10], "%lf,%lld,%lld", &o.uploads_before, &ra, &ru) != 3) {
		fprintf(stderr, "stillfs: --capture-helper is for the daemon's own use\n");
		return CAP_EXIT_USAGE;
	}
	o.redate_after = ra;
	o.redate_until = ru;
	o.date_ahead = 1; /* opens of .snapshot files wait for cap_stats.dated_until (file.c) */
	o.writeback = strcmp(argv[7], "-") ? argv[7] : NULL;
	o.writeback_inodes = hp_writeback_inodes;
	o.writeback_arg = argv[7];
	o.extents = strcmp(argv[9], "-") ? argv[9] : NULL;
	o.store = argv[11];
	o.dest = argv[12];
	o.previous = argc >= 14 ? argv[13] : NULL;
	o.recycle = argc == 15 ? argv[14] : NULL;
	if (pthread_create(&t, NULL, hp_lifeline, NULL) == 0)
		pthread_detach(t);
	memset(&st, 0, sizeof st);
	o.progress = hp_progress;
	rc = cap_snapshot(&o, &st);
	if (rc == 0)
		printf("ok id=%s cut=%lld.%09ld dur=%.6f lock=%.6f files=%" PRIu64
		       " copied=%" PRIu64 " linked=%" PRIu64 " cloned=%" PRIu64 " retries=%u"
		       " dated=%" PRId64 "\n",
		       st.id, (long long)st.cut.tv_sec, st.cut.tv_nsec, st.duration_s,
		       st.lock_max_s, st.files, st.bytes_copied, st.bytes_linked, st.bytes_cloned,
		       st.retries, st.dated_until);
	else
		printf("err %d\n", -rc);
	fflush(stdout);
	if (rc == 0)
		return CAP_EXIT_OK;
	if (rc == -EAGAIN)
		return CAP_EXIT_UNSETTLED;
	if (rc == -ENOSPC || rc == -EIO || rc == -EDQUOT)
		return CAP_EXIT_IO;
	return CAP_EXIT_FAIL;
}
