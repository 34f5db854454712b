/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * slowstat: an LD_PRELOAD shim that makes every statx(2) of one process take longer, as on a
 * network or FUSE file system where each stat is a round trip to a server. STILLFS_SLOWSTAT_US
 * sets the extra microseconds per call (default 0: no change).
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static int (*real_statx)(int, const char *, int, unsigned int, struct statx *);
static long extra_ns;

__attribute__((constructor)) static void ss_init(void)
{
	/* POSIX lets dlsym's object pointer hold a function's address. */
	void *sym = dlsym(RTLD_NEXT, "statx");
	memcpy(&real_statx, &sym, sizeof sym);
	const char *us = getenv("STILLFS_SLOWSTAT_US");
	if (us)
		extra_ns = strtol(us, NULL, 10) * 1000;
}

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf)
{
	if (extra_ns > 0) {
		struct timespec d = { extra_ns / 1000000000, extra_ns % 1000000000 };
		while (nanosleep(&d, &d) != 0)
			;
	}
	return real_statx(dirfd, path, flags, mask, buf);
}
