#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Class 3: a file of the group has two names (current/x.bin, archive/x.bin) and is written
# through one: inotify reports the write only in current/. A churning unrelated file keeps the
# capture settling for more than 2 s. The writer bursts when a reader opens the group (--on-read).
# The naive copy goes file by file: cp -a would copy the two names as one file.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/cut-lib.sh"
cut_class 3 hardlink cut_copy_files --on-read
