#!/usr/bin/env bash
# The reference for bench/relink.py: what nixpkgs' autoPatchelf hook did to each file, one
# patchelf process per query or change, given the decisions lockbox made (PLAN: lines of
# "copy<TAB>source<TAB>target" and "file<TAB>path<TAB>run path").
set -euo pipefail
while IFS=$'\t' read -r kind first second; do
    case "$kind" in
    copy)
        cp "$first" "$second"
        chmod 755 "$second"
        ;;
    file)
        patchelf --print-interpreter "$first" >/dev/null 2>&1 || true
        patchelf --print-needed "$first" >/dev/null
        current=$(patchelf --print-rpath "$first")
        if [ "$current" != "$second" ]; then
            patchelf --set-rpath "$second" "$first"
        fi
        ;;
    esac
done < "$1"
