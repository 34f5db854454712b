#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Every option stillctl(1) documents for a command (its OPTIONS subsection) is named by that
# command's --help, and every option --help names is documented there; every command of the
# SYNOPSIS answers --help with its usage, exit 0; and the bash completion offers exactly
# the options --help names (run with stand-ins for bash-completion's helpers).
source "$(dirname "$0")/lib.sh"
man=$(dirname "$0")/../../docs/stillctl.1
python3 - "$STILLCTL" "$man" <<'EOF' || t_fail "stillctl --help and stillctl(1) disagree"
import re, subprocess, sys
ctl, man = sys.argv[1], open(sys.argv[2]).read().split("\n")

def opts(text):
    return set(re.findall(r"(?<![\w-])(--?[a-zA-Z][a-zA-Z-]*)", text))

# The man page: ".SS CMD" subsections of OPTIONS; a tag line follows each ".TP".
documented, cmd, in_options = {}, None, False
for i, line in enumerate(man):
    if line.startswith(".SH"):
        in_options = line.strip() == ".SH OPTIONS"
        cmd = None
    elif in_options and line.startswith(".SS "):
        cmd = line[4:].strip().strip('"')
        documented[cmd] = set()
    elif in_options and cmd and i > 0 and man[i - 1].strip() == ".TP":
        documented[cmd] |= opts(line.replace("\\-", "-"))
assert {"snapshot", "verify", "status", "cache list", "cache prune"} <= set(documented), documented

# The SYNOPSIS: every command stillctl has.
synopsis = []
for line in man[man.index(".SH SYNOPSIS"):man.index(".SH DESCRIPTION")]:
    m = re.match(r"^\.B stillctl ([a-z][a-z ]*[a-z])$", line)
    if m:
        synopsis.append(m.group(1))
assert len(synopsis) >= 7, synopsis

bad = []
for cmd in synopsis:
    r = subprocess.run([ctl] + cmd.split() + ["--help"], capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.startswith("Usage: stillctl " + cmd):
        bad.append("%s --help: exit %d, %r" % (cmd, r.returncode, r.stdout[:60]))
        continue
    # Option lines of the help: indented, starting with the option itself.
    helped = set()
    for line in r.stdout.split("\n"):
        m = re.match(r"^\s+((?:-[a-zA-Z], )?--[a-z][a-z-]*)", line)
        if m:
            helped |= opts(m.group(1))
    doc = documented.get(cmd, set())
    for o in sorted(doc - helped):
        bad.append("%s: %s is in stillctl(1) but not in --help" % (cmd, o))
    for o in sorted(helped - doc - {"--help"}):
        bad.append("%s: %s is in --help but not in stillctl(1)" % (cmd, o))
    print("%-12s %s" % (cmd, " ".join(sorted(helped))), file=sys.stderr)
if bad:
    print("\n".join(bad), file=sys.stderr)
    sys.exit(1)
EOF

comp=$(dirname "$0")/../../packaging/stillctl.bash-completion
complete_words() {
  bash -c '
    _init_completion() { cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]};
                         words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; }
    _filedir() { :; }
    source "$1"; shift
    COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _stillctl
    printf "%s\n" "${COMPREPLY[@]}" | sort' _ "$comp" stillctl "$@"
}
[ "$(complete_words "" | tr '\n' ' ')" = "--help --version cache help metrics refresh snapshot status verify " ] ||
  t_fail "completion of commands: $(complete_words "" | tr '\n' ' ')"
for cmd in snapshot verify status metrics refresh "cache list" "cache prune"; do
  # shellcheck disable=SC2086
  want=$("$STILLCTL" $cmd --help | { grep -oE '^ +(-[a-z], )?--[a-z-]+' || true; } | grep -oE -- '--?[a-z-]+' || true)
  want=$(printf '%s\n--help\n' "$want" | sed '/^$/d' | sort -u)
  # shellcheck disable=SC2086
  have=$(complete_words $cmd - | sort -u)
  [ "$want" = "$have" ] || t_fail "completion of '$cmd -' offers $(echo $have) and --help names $(echo $want)"
done
echo "ok: --help, stillctl(1) and the bash completion name the same options"
