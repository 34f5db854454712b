/* SPDX-License-Identifier: GPL-2.0-or-later */
/* lockrace MOUNTED STORED THREADS SECONDS: OFD locks through the mount, from many threads that
 * open, lock and close in a tight loop, so the kernel reuses file pointers (the lock owner ids
 * of OFD locks) while the daemon still processes the releases of the files that had them.
 *
 * Each thread holds two descriptors of MOUNTED in turn, each with a write lock on a byte of
 * its own: it opens and locks the next one, then checks on STORED (a description of its own,
 * so OFD locks of the daemon conflict with it) that both locks it believes it holds are
 * really there, and only then closes the older one. A lock that is not there was lost.
 * Prints "lost N locks=N retries=N"; exits 1 if any lock was lost, 2 on other errors. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static const char *mounted, *stored;
static double until;
static atomic_long lost, locks, retries, errs;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int ofd(int fd, int cmd, short type, off_t byte, struct flock *out)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };
	int r = fcntl(fd, cmd, &fl);
	if (out)
		*out = fl;
	return r;
}

/* Whether byte is locked by someone other than the description behind fd. */
static int held(int fd, off_t byte)
{
	struct flock fl;
	if (ofd(fd, F_OFD_GETLK, F_WRLCK, byte, &fl) < 0)
		return atomic_fetch_add(&errs, 1), 1;
	return fl.l_type != F_UNLCK;
}

/* Open MOUNTED and lock byte; a lock the daemon has not yet dropped for one of our own
 * closed descriptors may still be in the way for a moment. */
static int open_locked(off_t byte)
{
	int fd = open(mounted, O_RDWR);
	if (fd < 0)
		return -1;
	double give_up = now() + 10;
	while (ofd(fd, F_OFD_SETLK, F_WRLCK, byte, NULL) < 0) {
		if ((errno != EAGAIN && errno != EACCES) || now() > give_up) {
			close(fd);
			return -1;
		}
		atomic_fetch_add(&retries, 1);
		sched_yield();
	}
	atomic_fetch_add(&locks, 1);
	return fd;
}

static void *run(void *arg)
{
	off_t base = 2 * (off_t)(intptr_t)arg;
	int fd[2] = { -1, -1 };
	int probe = open(stored, O_RDONLY);
	if (probe < 0) {
		atomic_fetch_add(&errs, 1);
		return NULL;
	}
	for (unsigned i = 0; now() < until; i++) {
		int cur = i & 1, old = !cur;
		if ((fd[cur] = open_locked(base + cur)) < 0) {
			atomic_fetch_add(&errs, 1);
			break;
		}
		if (!held(probe, base + cur))
			atomic_fetch_add(&lost, 1);
		if (fd[old] >= 0) {
			if (!held(probe, base + old))
				atomic_fetch_add(&lost, 1);
			close(fd[old]);
			fd[old] = -1;
		}
	}
	for (int k = 0; k < 2; k++)
		if (fd[k] >= 0)
			close(fd[k]);
	close(probe);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: lockrace MOUNTED STORED THREADS SECONDS\n");
		return 2;
	}
	mounted = argv[1];
	stored = argv[2];
	int n = atoi(argv[3]);
	until = now() + atof(argv[4]);
	if (n < 1 || n > 256) {
		fprintf(stderr, "lockrace: THREADS must be 1 to 256\n");
		return 2;
	}
	pthread_t t[256];
	for (int i = 0; i < n; i++)
		if (pthread_create(&t[i], NULL, run, (void *)(intptr_t)i)) {
			fprintf(stderr, "lockrace: cannot start a thread\n");
			return 2;
		}
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	printf("lost %ld locks=%ld retries=%ld errors=%ld\n", atomic_load(&lost),
	       atomic_load(&locks), atomic_load(&retries), atomic_load(&errs));
	return atomic_load(&lost) ? 1 : atomic_load(&errs) ? 2 : 0;
}
