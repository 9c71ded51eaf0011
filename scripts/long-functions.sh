#!/bin/bash
# Lists the functions in src/ longer than N lines (default 100), longest first:
# "LINES FILE:LINE NAME", with "(test)" after a function inside a
# `#[cfg(test)]` module or a `tests.rs`, and "(why: ...)" after one whose doc or
# comment just above says why it stays long (a comment beginning "Long on purpose:").
#
#   scripts/long-functions.sh [N] [DIR]
#
# A function is counted from its `fn` line to the brace that closes it (string
# and char literals and `//` comments are left out of the brace count); a
# function nested in another counts as part of it.
set -euo pipefail
MIN="${1:-100}"
DIR="${2:-$(dirname "$0")/../src}"
find "$DIR" -name '*.rs' | sort | while read -r f; do
    awk -v file="$f" -v min="$MIN" '
    function strip(s) {
        gsub(/\\\\/, "", s)            # escaped backslashes first
        gsub(/\\"/, "", s)             # then escaped quotes
        gsub(/"[^"]*"/, "\"\"", s)     # string literals (one line)
        gsub(/'"'"'[^'"'"'\\]'"'"'/, "", s)       # char literals
        gsub(/'"'"'\\.'"'"'/, "", s)
        sub(/\/\/.*/, "", s)           # line comments
        return s
    }
    BEGIN { depth = 0; infn = 0; intest = (file ~ /tests\.rs$/); why = "" }
    /#\[cfg\(test\)\]/ { intest = 1 }
    {
        line = strip($0)
        if ($0 ~ /Long on purpose/) why = $0
        if (!infn && line ~ /(^|[^a-zA-Z_])fn [a-zA-Z_][a-zA-Z0-9_]*/) {
            name = line; sub(/.*fn /, "", name); sub(/[^a-zA-Z0-9_].*/, "", name)
            infn = 1; start = NR; fndepth = depth; opened = 0; test = intest; reason = why
        }
        n = split(line, ch, "")
        for (i = 1; i <= n; i++) {
            if (ch[i] == "{") { depth++; if (infn) opened = 1 }
            else if (ch[i] == "}") depth--
            else if (ch[i] == ";" && infn && !opened && depth == fndepth) infn = 0  # a declaration
        }
        if (infn && opened && depth == fndepth) {
            len = NR - start + 1
            if (len > min) {
                tag = test ? " (test)" : ""
                if (reason != "") { tag = tag " (long on purpose)" }
                printf "%d %s:%d %s%s\n", len, file, start, name, tag
            }
            infn = 0
        }
        if (!infn && line !~ /^[ \t]*(#|\/\/|$)/ && $0 !~ /Long on purpose/ && $0 !~ /^[ \t]*\/\//) why = ""
    }' "$f"
done | sort -rn
