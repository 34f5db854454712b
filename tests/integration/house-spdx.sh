#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Every source file (C, headers, shell, meson) names its licence in its first two lines, as the
# LICENSE file and meson.build's `license` say: GPL-2.0-or-later.
source "$(dirname "$0")/lib.sh"
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
missing=$(find fs include tests scripts bench packaging debian -type f \
  \( -name '*.c' -o -name '*.h' -o -name '*.sh' -o -name meson.build \) -not -path '*/node_modules/*' |
  while read -r f; do head -2 "$f" | grep -q 'SPDX-License-Identifier: GPL-2.0-or-later' || echo "$f"; done)
[ -z "$missing" ] || t_fail "no SPDX-License-Identifier line in: $(echo $missing)"
grep -q "license : 'GPL-2.0-or-later'" meson.build || t_fail "meson.build's license is not GPL-2.0-or-later"
grep -q 'GNU GENERAL PUBLIC LICENSE' LICENSE && grep -q 'Version 2, June 1991' LICENSE ||
  t_fail "LICENSE is not the GPL version 2"
t_log "OK: $(find fs include tests scripts bench packaging debian -type f \( -name '*.c' -o -name '*.h' -o -name '*.sh' -o -name meson.build \) -not -path '*/node_modules/*' | wc -l) files"
