#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Class 5: each file of the group written to NAME.tmp, fsync'd and renamed over NAME, with
# 150 ms between renames.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/cut-lib.sh"
cut_class 5 rename-stall "cp -a" --stall-ms 150
