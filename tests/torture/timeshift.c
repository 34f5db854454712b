/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * timeshift: an LD_PRELOAD shim that steps the wall clock of one process, for tests of clock
 * steps during a capture. STILLFS_TIMESHIFT="SECONDS@AFTER": from AFTER seconds (monotonic)
 * after the process started, CLOCK_REALTIME (and its coarse form, gettimeofday, time) reads
 * SECONDS later (negative: earlier). The monotonic clocks are left alone.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static int (*real_gettime)(clockid_t, struct timespec *);
static double shift, after = -1;
static struct timespec born;

static double ts_sec(struct timespec t) { return (double)t.tv_sec + t.tv_nsec / 1e9; }

__attribute__((constructor)) static void ts_init(void)
{
	/* POSIX lets dlsym's object pointer hold a function's address. */
	void *sym = dlsym(RTLD_NEXT, "clock_gettime");
	memcpy(&real_gettime, &sym, sizeof sym);
	real_gettime(CLOCK_MONOTONIC, &born);
	const char *spec = getenv("STILLFS_TIMESHIFT");
	char *at;
	if (spec && (shift = strtod(spec, &at), *at == '@'))
		after = strtod(at + 1, NULL);
}

static void ts_apply(struct timespec *t)
{
	struct timespec now;
	if (after < 0)
		return;
	real_gettime(CLOCK_MONOTONIC, &now);
	if (ts_sec(now) - ts_sec(born) < after)
		return;
	long long ns = (long long)t->tv_sec * 1000000000LL + t->tv_nsec + (long long)(shift * 1e9);
	t->tv_sec = (time_t)(ns / 1000000000LL);
	t->tv_nsec = (long)(ns % 1000000000LL);
}

int clock_gettime(clockid_t id, struct timespec *t)
{
	int rc = real_gettime(id, t);
	if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
		ts_apply(t);
	return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
	struct timespec t;
	(void)tz;
	clock_gettime(CLOCK_REALTIME, &t);
	tv->tv_sec = t.tv_sec;
	tv->tv_usec = t.tv_nsec / 1000;
	return 0;
}

time_t time(time_t *out)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	if (out)
		*out = t.tv_sec;
	return t.tv_sec;
}
