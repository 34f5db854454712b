#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Writing to a set-ID file or one with file capabilities through the mount takes them away
# exactly as writing to it in the store does. A user who may write a set-user-ID root program
# but leaves its set-user-ID bit in place has made themselves root; a local file system clears
# set-user-ID, set-group-ID (of a group-executable file, or for a writer outside its group) and
# security.capability when a writer without CAP_FSETID writes, truncates (by descriptor or by
# name), fallocates or copies into it, or opens it with O_TRUNC, and whenever it is chowned
# (to another owner, or to its own: chown(-1, -1)). Through FUSE with
# FUSE_HANDLE_KILLPRIV_V2 the kernel leaves that to the file system. Each operation is done
# once in the store and once through the mount, on two files made alike, by root, by root
# without CAP_FSETID and by an unprivileged user, on set-user-ID and set-group-ID files with
# and without execute bits and on files with security.capability (files with an execute or a
# set-ID bit get no passthrough backing, the others do); the modes and capabilities afterwards
# must be the same, but for the known differences below. Also through a mount with
# -o no_passthrough, and writes through mmap, which clear nothing in the store.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
command -v setcap >/dev/null || t_fail "setcap (libcap2-bin) is needed"
t_attacker sfkp
store=$T_WORK/store
mkdir -p "$store/pub" "$T_WORK/mnt" "$T_WORK/mntnp"
chmod 1777 "$store/pub"
head -c 8192 /dev/urandom >"$store/pub/src"
chmod 644 "$store/pub/src"

head -c 8192 /dev/zero >"$T_WORK/capref"
setcap cap_net_raw+ep "$T_WORK/capref" || t_fail "setcap failed"

# Where the mount clears more than the store, for reasons of FUSE itself:
# - pages written through a mapping that the kernel keeps in the mount's page cache (files
#   without a passthrough backing: executables, set-ID files, -o no_passthrough) reach the
#   store as writes, which drop security.capability; a local file system keeps it (mmap);
# - when root (with CAP_FSETID) writes, fallocates or copies into a set-ID file that also has
#   file capabilities, the kernel asks to clear privileges (for the capabilities) without
#   saying which, and the daemon, which cannot tell root with CAP_FSETID from root without,
#   clears the set-ID bits too;
# - pages a user other than root wrote through such a mapping are written back with the ids
#   of the handle's opener (not root's, which could fill the blocks ext4 keeps for root: see
#   reld-attack-mmapfill), without CAP_FSETID, so the store's file system clears the set-ID
#   bits too (mmap by user).
# All take privileges away, never leave any.
#
# One process as root makes the files and compares them; one worker per caller does the
# operations it is sent (a process per operation made this test take minutes).
cat >"$T_WORK/killpriv.py" <<'PY'
import ctypes, mmap, os, subprocess, sys

def worker(user_uid, user_gid):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    for line in sys.stdin:
        who, op, f, src = line.rstrip("\n").split("\t")
        try:
            if op == "write":
                fd = os.open(f, os.O_WRONLY); os.write(fd, b"x"); os.close(fd)
            elif op == "pwrite":
                fd = os.open(f, os.O_WRONLY); os.pwrite(fd, b"y", 4096); os.close(fd)
            elif op == "truncate":
                fd = os.open(f, os.O_WRONLY); os.ftruncate(fd, 100); os.close(fd)
            elif op == "ptruncate":
                os.truncate(f, 50)
            elif op == "otrunc":
                os.close(os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
            elif op == "fallocate":
                fd = os.open(f, os.O_WRONLY)
                if libc.fallocate(fd, 0, 8192, 65536) != 0:
                    raise OSError(ctypes.get_errno(), "fallocate")
                os.close(fd)
            elif op == "copy":
                i = os.open(src, os.O_RDONLY); o = os.open(f, os.O_WRONLY)
                os.copy_file_range(i, o, 4096, 0, 0); os.close(i); os.close(o)
            elif op == "mmap":
                with open(f, "r+b") as fh:
                    m = mmap.mmap(fh.fileno(), 0); m[0] = 0x7a; m.flush(); m.close()
            elif op == "chownnop":
                os.chown(f, -1, -1)
            elif op == "chown":
                if who == "user":
                    os.chown(f, -1, user_gid)    # chgrp to the user's own group
                else:
                    os.chown(f, user_uid, -1)
            print("ok", flush=True)
        except OSError as e:
            print("error %s" % e, flush=True)

def main():
    store, mnt, tag, user, capref = sys.argv[2:7]
    import pwd
    pw = pwd.getpwnam(user)
    cap = os.getxattr(capref, "security.capability")
    me = [sys.executable, sys.argv[0], "worker", str(pw.pw_uid), str(pw.pw_gid)]
    prefix = {"root": [],
              "nofsetid": ["setpriv", "--bounding-set", "-fsetid", "--inh-caps", "-fsetid", "--"],
              "user": ["setpriv", "--reuid", user, "--regid", user, "--init-groups", "--"]}
    workers = {w: subprocess.Popen(p + me, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   text=True, bufsize=1) for w, p in prefix.items()}

    def run(who, op, f, src):
        w = workers[who]
        w.stdin.write("%s\t%s\t%s\t%s\n" % (who, op, f, src))
        w.stdin.flush()
        reply = w.stdout.readline().strip()
        if reply != "ok":
            sys.exit("FAIL: %s %s on %s: %s" % (who, op, f, reply or "the worker died"))

    def make_file(f, kind, op, who):
        with open(f, "wb") as fh:
            fh.write(bytes(8192))
        # the user chgrps a file of their own; the others are root's
        os.chown(f, pw.pw_uid if op.startswith("chown") and who == "user" else 0, 0)
        mode = int(kind.split("+")[0], 8)
        os.chmod(f, mode)
        if kind.endswith("+cap"):
            os.setxattr(f, "security.capability", cap)
        os.chmod(f, mode)    # setting capabilities leaves set-ID bits, but be sure

    def state(f):
        s = "%o" % (os.stat(f).st_mode & 0o7777)
        try:
            os.getxattr(f, "security.capability")
            s += "+cap"
        except OSError:
            pass
        return s

    def known(who, op, kind, ns, ms):
        if op == "mmap" and ns == ms + "+cap":
            return True
        m = ns[:-4] if ns.endswith("+cap") else ns
        if op == "mmap" and who == "user" and len(m) == 4 and ms in (m[1:], m[1:] + "+cap"):
            return True
        return (who == "root" and kind[0] in "246" and kind.endswith("+cap") and
                op in ("write", "pwrite", "fallocate", "copy") and ns[1:] == ms)

    kinds = "4777 4666 2777 2666 6755 0777+cap 0666+cap 4777+cap 2775+cap".split()
    ops = "write pwrite truncate ptruncate otrunc fallocate copy mmap chown chownnop".split()
    cases = nknown = mismatches = 0
    for who in ("root", "nofsetid", "user"):
        for op in ops:
            for kind in kinds:
                # a file only root may write: the user writes those of mode o+w only
                if who == "user" and not op.startswith("chown") and kind[3] not in "67":
                    continue
                n = "%s/pub/n.%s.%s.%s.%s" % (store, tag, who, op, kind)
                m = "m.%s.%s.%s.%s" % (tag, who, op, kind)
                make_file(n, kind, op, who)
                make_file("%s/pub/%s" % (store, m), kind, op, who)
                run(who, op, n, store + "/pub/src")
                run(who, op, "%s/pub/%s" % (mnt, m), mnt + "/pub/src")
                ns, ms = state(n), state("%s/pub/%s" % (store, m))
                cases += 1
                if ns != ms and known(who, op, kind, ns, ms):
                    print("# known: %s: %s %s on %s: in the store -> %s, through the mount -> %s"
                          % (tag, who, op, kind, ns, ms), file=sys.stderr)
                    nknown += 1
                elif ns != ms:
                    print("MISMATCH %s: %s %s on %s: in the store -> %s, through the mount -> %s"
                          % (tag, who, op, kind, ns, ms), file=sys.stderr)
                    mismatches += 1
                os.unlink(n)
                os.unlink("%s/pub/%s" % (store, m))
    for w in workers.values():
        w.stdin.close()
        w.wait()
    print(cases, nknown, mismatches)

if sys.argv[1] == "worker":
    worker(int(sys.argv[2]), int(sys.argv[3]))
else:
    main()
PY
chmod 755 "$T_WORK/killpriv.py"
mismatches=0 cases=0 known=0
# check_mount MNT TAG: every caller, operation and kind of file, in the store and through MNT.
check_mount() {
  local out c k m
  out=$(python3 "$T_WORK/killpriv.py" main "$store" "$1" "$2" "$user" "$T_WORK/capref") ||
    t_fail "the operations through $1 ($2) did not run"
  read -r c k m <<<"$out"
  cases=$((cases + c)) known=$((known + k)) mismatches=$((mismatches + m))
}

t_mount "$store" "$T_WORK/mnt" -o auto_unmount,allow_other,snapshot_max_age=3600,snapshot_linger=0
t_log "passthrough: $(t_status "$T_WORK/mnt" passthrough)"
check_mount "$T_WORK/mnt" pt
t_unmount "$T_WORK/mnt"
t_mount "$store" "$T_WORK/mntnp" -o auto_unmount,allow_other,no_passthrough,snapshot_max_age=3600,snapshot_linger=0
check_mount "$T_WORK/mntnp" np
t_unmount "$T_WORK/mntnp"
[ "$mismatches" = 0 ] || t_fail "$mismatches of $cases operations left set-ID bits or capabilities other than the store's own rules do"
echo "PASS: $cases operations ($known known differences, listed above) through the mount clear set-ID bits and capabilities as in the store"
