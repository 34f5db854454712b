#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Class 4: the group is written with Linux native AIO (io_submit), which raises no inotify
# event, while a churning unrelated file keeps the capture settling for more than 2 s. The
# writer bursts when a reader opens the group (--on-read).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/cut-lib.sh"
cut_class 4 aio cut_copy_files --on-read
