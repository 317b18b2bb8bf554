#!/usr/bin/env bash
# Checks that a binary runs on an older system, the floor (Debian 12 for the release packages):
# every shared library it needs exists there, every symbol version it needs (readelf -V) is
# defined by that library there, and every symbol it needs without a version is exported by
# one of its libraries there. Prints, per library, the highest version the binary needs it at.
#
#   deploy/check-abi.sh BINARY [--floor DIR] [--skip GLOB]...
#
#   --floor DIR   root of the floor system's files (default /: this machine); for arm64 the
#                 Debian 12 arm64 sysroot of deploy/cross/aarch64.sh
#   --skip GLOB   a library not to look for (the tests' debug binary needs the toolchain's
#                 shared Swift runtime, which no board has); symbols without a version are
#                 then not checked either, since such a library may be what provides them
#
# Last line: `abi: ok ...` (exit 0) or `abi: N problems ...` (exit 1), each problem named above.
set -euo pipefail

binary="" floor=/ skips=()
while [ $# -gt 0 ]; do
    case "$1" in
        --floor) floor=$2; shift 2 ;;
        --skip) skips+=("$2"); shift 2 ;;
        -*) echo "check-abi.sh: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
        *) binary=$1; shift ;;
    esac
done
[ -n "$binary" ] || { echo "usage: $0 BINARY [--floor DIR] [--skip GLOB]..." >&2; exit 2; }
[ -f "$binary" ] || { echo "check-abi.sh: no file $binary" >&2; exit 2; }
[ -d "$floor" ] || { echo "check-abi.sh: no floor directory $floor" >&2; exit 2; }
floor=${floor%/}

machine=$(readelf -h "$binary" | sed -n 's/^ *Machine: *//p')
case "$machine" in
    AArch64) multiarch=aarch64-linux-gnu ;;
    *X86-64*) multiarch=x86_64-linux-gnu ;;
    *) echo "check-abi.sh: $binary is for '$machine', not aarch64 or x86_64" >&2; exit 2 ;;
esac

# A library's file in the floor (an absolute symlink points inside the floor too).
find_lib() { # SONAME
    local d f t
    for d in "lib/$multiarch" "usr/lib/$multiarch" lib usr/lib lib64 usr/lib64; do
        f=$floor/$d/$1
        for _ in 1 2 3 4 5 6 7 8; do
            [ -L "$f" ] || break
            t=$(readlink "$f")
            case "$t" in /*) f=$floor$t ;; *) f=$(dirname "$f")/$t ;; esac
        done
        [ -f "$f" ] && { echo "$f"; return 0; }
    done
    return 1
}

problems=0
problem() { echo "PROBLEM: $*"; problems=$((problems + 1)); }

skipped() { local g; for g in "${skips[@]+"${skips[@]}"}"; do case "$1" in $g) return 0 ;; esac; done; return 1; }

# The versions the binary needs, as "FILE VERSION" lines, from .gnu.version_r.
needs=$(readelf -V -W "$binary" | awk '
    /Version needs section/ { inneeds = 1; next }
    /Version (definition|symbols) section/ { inneeds = 0 }
    inneeds && /File:/ { for (i = 1; i <= NF; i++) if ($i == "File:") file = $(i + 1) }
    inneeds && /Name:/ && file != "" { for (i = 1; i <= NF; i++) if ($i == "Name:") print file, $(i + 1) }')

libs=() checked_all=1 lib_files=()
for lib in $(readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    if skipped "$lib"; then
        echo "$lib: not checked (--skip)"
        checked_all=0
        continue
    fi
    if ! file=$(find_lib "$lib"); then
        problem "$lib is needed but the floor ($floor) has no such library"
        continue
    fi
    libs+=("$lib") lib_files+=("$file")
    defined=$(readelf -V -W "$file" | sed -n '/Version definition section/,/Version needs section/p' | { grep -oE 'Name: [^ ]+' || true; } | cut -d' ' -f2 | sort -u)
    wanted=$(awk -v l="$lib" '$1 == l { print $2 }' <<<"$needs" | sort -uV)
    if [ -z "$wanted" ]; then
        echo "$lib: no versioned symbols"
        continue
    fi
    for v in $wanted; do
        grep -qxF "$v" <<<"$defined" || problem "$lib: the binary needs $v, which the floor's $lib does not define"
    done
    # The highest needed per version family (GLIBC_, GLIBCXX_, CXXABI_, GCC_), and the floor's.
    for family in $(sed -E 's/_[0-9.]+$//' <<<"$wanted" | sort -u); do
        high=$({ grep -E "^${family}_[0-9]" <<<"$wanted" || true; } | sort -V | tail -1)
        have=$({ grep -E "^${family}_[0-9]" <<<"$defined" || true; } | sort -V | tail -1)
        echo "$lib: needs at most $high (the floor has up to ${have:-none})"
    done
done

# Symbols without a version must come from one of the libraries (libyaml exports no versions).
unversioned=$(readelf -W --dyn-syms "$binary" | awk '$7 == "UND" && $5 == "GLOBAL" && $8 != "" && $8 !~ /@/ { print $8 }' | sort -u)
if [ -n "$unversioned" ]; then
    if [ "$checked_all" = 1 ]; then
        exported=$(for f in "${lib_files[@]+"${lib_files[@]}"}"; do readelf -W --dyn-syms "$f" | awk '$7 != "UND" && $8 != "" { sub(/@.*/, "", $8); print $8 }'; done | sort -u)
        missing=$(comm -23 <(echo "$unversioned") <(echo "$exported"))
        for s in $missing; do problem "$s is needed without a version and none of ${libs[*]} exports it in the floor"; done
        echo "symbols without a version: $(wc -l <<<"$unversioned"), all exported by the floor's libraries unless named above"
    else
        echo "symbols without a version: $(wc -l <<<"$unversioned"), not checked (a skipped library may export them)"
    fi
fi

glibc=$(awk '{ print $2 }' <<<"$needs" | { grep -E '^GLIBC_[0-9]' || true; } | sort -V | tail -1)
if [ "$problems" -eq 0 ]; then
    echo "abi: ok: $binary needs glibc ${glibc#GLIBC_} at most and runs on the floor ${floor:-/}"
else
    echo "abi: $problems problems: $binary does not run on the floor ${floor:-/} (above)"
    exit 1
fi
