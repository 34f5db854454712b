/* SPDX-License-Identifier: GPL-2.0-or-later */
/* SQLite-specific parts of a capture. Prefix: sq_.
 *
 * Two ways to hold a database still, chosen per database at cut time:
 * - rollback mode (or WAL header with no -wal file): an OFD read lock on SQLite's SHARED
 *   byte range, taken by SQLite's own protocol. No writer can commit while it is held, and
 *   being an OFD lock it survives any other descriptor of the file being closed;
 * - WAL mode: a read-only SQLite connection with an open read transaction, which pins a
 *   snapshot without blocking writers; the copy is made with the backup API.
 * Paths handed to SQLite are "/proc/self/fd/DIRFD/NAME" and go through a VFS that does not
 * resolve them, so a store that is mounted over (by stillfs itself) is still reached. */
#ifndef STILL_SQLCAP_H
#define STILL_SQLCAP_H

#include <stdint.h>
#include <sys/stat.h>
#include <stddef.h>
#include <sqlite3.h>

/* 1 if the 16 bytes look like an SQLite database header. */
int sq_is_header(const uint8_t head[16]);

/* Take SQLite's SHARED lock on fd as an OFD read lock, waiting at most timeout seconds.
 * 0, -EAGAIN (timed out) or -errno. */
int sq_lock_shared(int fd, double timeout);
void sq_unlock(int fd);

/* 1 if a connection of another process holds the RESERVED lock of the database open at dbfd
 * (it is in a write transaction, maybe waiting for our SHARED lock to commit), 0 if none,
 * or -errno. */
int sq_writer_active(int dbfd);

/* With the SHARED lock held on dbfd: 1 if NAME-journal beside it is hot (its writer died
 * mid-transaction), 0 if not, or -errno. */
int sq_journal_is_hot(int dirfd, const char *name, int dbfd);

/* 1 if companion c (a -wal, -journal or -shm) of database db is a regular file that each of
 * the database's readers (its owner; its group and others where db's mode lets them read) may
 * read too (c's mode narrowed by its ACL beforehand), 0 if not. What is folded into a database's copy is read with root's rights and
 * ends up in a file with the database's owner and mode: a companion that a reader of the
 * database could not read (another user's, put at the name by a rename) must not be. */
int sq_companion_ok(const struct stat *db, const struct stat *c);

/* Open a read-only connection to dirfd/name (not yet in a transaction). */
int sq_open_ro(int dirfd, const char *name, sqlite3 **db);
/* Begin a read transaction (pins a WAL snapshot). 0, -EBUSY, -EAGAIN, or -EIO with the
 * transaction left for the caller to end once sqlite3_errmsg has said why. */
int sq_begin_read(sqlite3 *db, double timeout);
/* In a read transaction: 1 if db reads its database in WAL mode, 0 if not, -EIO. Such a
 * connection keeps a SHARED lock on the database file and its -shm open from then on, so the
 * last other connection to close cannot delete the -wal and -shm under it. */
int sq_reads_wal(sqlite3 *db);
/* The WAL-index header as the shared memory holds it now: both copies, which every commit
 * rewrites. Two reads that differ mean a commit (or a writer mid-update) came between them.
 * Only for a connection that sq_reads_wal said reads in WAL mode (on any other, mapping the
 * index would open, even create, the -shm). 0, or -ENOTSUP if the VFS has no shared memory. */
#define SQ_WAL_HDR 96
int sq_wal_header(sqlite3 *db, uint8_t out[SQ_WAL_HDR]);
/* Copy the pinned state of db into the new file dst_path with the backup API. */
int sq_backup_to(sqlite3 *db, const char *dst_path);
/* The same into dst_path, an earlier copy that b describes: pages it holds already are not
 * written again, so only what changed is; blocks written to become invalid in b (which then
 * still describes the file) and *written counts the bytes written. 0 or -errno. */
struct dd_blocks;
int sq_backup_into(sqlite3 *db, const char *dst_path, struct dd_blocks *b, uint64_t *written);
/* Make the private copy at path self-contained: roll back a hot journal beside it, switch to
 * rollback-journal mode. 0 or -errno; *err gets a message (static or sqlite-owned, short-lived). */
int sq_finish_copy(const char *path, char *err, size_t errlen);
/* Run PRAGMA integrity_check on path opened read-only and immutable. 0 if "ok";
 * -EBADMSG with the first problem in err; -errno if it cannot be opened. */
int sq_integrity(const char *path, char *err, size_t errlen);

#endif
