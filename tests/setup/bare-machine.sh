#!/usr/bin/env bash
# tests/setup/bare-machine.sh: the README's commands on a machine that has
# none of the packages.  A copy of the source tree is run with a PATH in which
# dpkg-query reports every package missing:
#  - as an ordinary user, `make demo`, `make check`, `make check-sanitize`,
#    `make bench` and `make fuzz` print the exact `apt-get install` line and
#    stop, and nothing was compiled (no build directory);
#  - as root, each calls apt-get install with the build packages first
#    (uthash-dev, libssl-dev...), before any compiler runs: here apt-get is a
#    recorder that fails, as on a machine without network, so make must stop
#    there with nothing compiled.
# A target that compiles before installing leaves a build/ directory behind.
. "$(dirname "$0")/../lib/common.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src=$work/src
mkdir -p "$src" "$work/bin"
(cd "$TOP" && tar cf - --exclude='./build*' --exclude=./.git .) | (cd "$src" && tar xf -)

# Fakes: every package missing; apt-get records its arguments and fails;
# cc records that it ran (it must not, before the packages are in).
cat > "$work/bin/dpkg-query" <<'F'
#!/bin/sh
echo "dpkg-query: no packages found matching $*" >&2
exit 1
F
cat > "$work/bin/apt-get" <<F
#!/bin/sh
echo "apt-get \$*" >> "$work/apt.log"
exit 100
F
for c in cc gcc clang; do
    printf '#!/bin/sh\necho "%s $*" >> "%s/cc.log"\nexit 1\n' "$c" "$work" > "$work/bin/$c"
done
cat > "$work/bin/id" <<'F'
#!/bin/sh
[ "$1" = "-u" ] && { echo "${FAKE_UID:-1000}"; exit 0; }
exec /usr/bin/id "$@"
F
chmod +x "$work/bin/"*
fakepath="$work/bin:$PATH"

for target in demo check check-sanitize bench fuzz; do
    rm -rf "$src/build" "$src/build-san" "$work/apt.log" "$work/cc.log"
    out=$(cd "$src" && FAKE_UID=1000 PATH="$fakepath" make "$target" 2>&1); rc=$?
    if [ $rc -ne 0 ] && grep -q "apt-get install -y.*uthash-dev" <<<"$out" &&
       grep -q "libssl-dev" <<<"$out" && [ ! -e "$src/build" ] && [ ! -e "$work/cc.log" ] &&
       [ ! -e "$work/apt.log" ]; then
        echo "PASS user-make-$target-prints-apt-line-first"
    else
        echo "FAIL user-make-$target-prints-apt-line-first: rc=$rc build=$( [ -e "$src/build" ] && echo present || echo absent) cc='$(cat "$work/cc.log" 2>/dev/null | head -1)' out='$(tail -3 <<<"$out" | tr '\n' ' ')'"
    fi

    rm -rf "$src/build" "$src/build-san" "$work/apt.log" "$work/cc.log"
    out=$(cd "$src" && FAKE_UID=0 PATH="$fakepath" make "$target" 2>&1); rc=$?
    if [ $rc -ne 0 ] && grep -q "install .*uthash-dev" "$work/apt.log" 2>/dev/null &&
       [ ! -e "$src/build" ] && [ ! -e "$work/cc.log" ]; then
        echo "PASS root-make-$target-installs-before-compiling"
    else
        echo "FAIL root-make-$target-installs-before-compiling: rc=$rc apt='$(head -1 "$work/apt.log" 2>/dev/null)' build=$( [ -e "$src/build" ] && echo present || echo absent) cc='$(head -1 "$work/cc.log" 2>/dev/null)'"
    fi
done

# CI runs the README's commands, not a separate `make deps` that would hide
# a missing step.
if grep -qE '^\s*make deps' "$TOP/.ci/run"; then
    echo "FAIL ci-runs-readme-commands: .ci/run calls make deps"
elif grep -qE '^\s*make demo' "$TOP/.ci/run" && grep -qE '^\s*make check\s*$' "$TOP/.ci/run"; then
    echo "PASS ci-runs-readme-commands"
else
    echo "FAIL ci-runs-readme-commands: .ci/run does not run make demo and make check"
fi
