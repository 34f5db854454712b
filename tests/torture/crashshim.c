/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * crashshim: an LD_PRELOAD shim for tests of databases a writer left mid-transaction.
 *   CRASHSHIM_KILL_UNLINK=S   the process kills itself (SIGKILL) when it is about to unlink a
 *                             path containing S: an SQLite writer stopped right before it
 *                             deletes a super-journal (the commit point of a transaction over
 *                             several databases), as a crash there would stop it.
 *   CRASHSHIM_BEFORE_FINISH=C the shell command C runs once, right before the process first
 *                             opens a database read-write through a /proc/self/fd/ path: in
 *                             stillctl, when a capture makes its private copies self-contained,
 *                             after it released the store's databases (so that something can
 *                             happen to the store between the cut and that moment).
 */
#include <dlfcn.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct sqlite3 sqlite3;
#define CS_OPEN_READWRITE 0x2 /* SQLITE_OPEN_READWRITE */
int sqlite3_open_v2(const char *name, sqlite3 **db, int flags, const char *vfs);

static void *cs_next(const char *name)
{
	return dlsym(RTLD_NEXT, name);
}

int unlink(const char *path)
{
	const char *k = getenv("CRASHSHIM_KILL_UNLINK");
	if (k && *k && strstr(path, k))
		kill(getpid(), SIGKILL);
	int (*real)(const char *);
	void *sym = cs_next("unlink");
	memcpy(&real, &sym, sizeof sym);
	return real(path);
}

int sqlite3_open_v2(const char *name, sqlite3 **db, int flags, const char *vfs)
{
	static int ran;
	const char *cmd = getenv("CRASHSHIM_BEFORE_FINISH");
	if (cmd && !ran && (flags & CS_OPEN_READWRITE) && strstr(name, "/proc/self/fd/")) {
		ran = 1;
		if (system(cmd) != 0)
			abort();
	}
	int (*real)(const char *, sqlite3 **, int, const char *);
	void *sym = cs_next("sqlite3_open_v2");
	memcpy(&real, &sym, sizeof sym);
	return real(name, db, flags, vfs);
}
