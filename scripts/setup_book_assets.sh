#!/usr/bin/env bash
# Put MathJax 3 under book/_static/mathjax/ so the book's equations render without internet.
#
# MathJax comes from the npm registry (`npm pack`, no install, no node_modules), is checked
# against the digest below and unpacked atomically (temp folder, then one rename). The folder
# is git-ignored; `_config.yml` points Sphinx's `mathjax_path` at it. Run it once after cloning
# (the README's set-up does); running it again is a no-op.
set -euo pipefail

MATHJAX_VERSION=3.2.2
MATHJAX_SHA1=c754d7b46a679d7f3fa03543d6b8bf124ddf9f6b  # shasum the npm registry lists for mathjax-3.2.2.tgz

root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/book/_static/mathjax"

if [ -f "$dest/VERSION" ] && [ "$(cat "$dest/VERSION")" = "$MATHJAX_VERSION" ] && [ -f "$dest/tex-chtml.js" ]; then
  echo "MathJax $MATHJAX_VERSION already in $dest"
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "error: npm is needed to fetch MathJax $MATHJAX_VERSION from the npm registry;" \
       "install it (apt-get install -y npm) and run $0 again" >&2
  exit 1
fi

mkdir -p "$root/book/_static"
tmp=$(mktemp -d "$root/book/_static/.mathjax.XXXXXX")  # same file system as $dest: the final mv is a rename
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent "mathjax@$MATHJAX_VERSION" >/dev/null)
tarball="$tmp/mathjax-$MATHJAX_VERSION.tgz"
if ! echo "$MATHJAX_SHA1  $tarball" | sha1sum --check --status; then
  echo "error: $tarball does not match sha1 $MATHJAX_SHA1; delete it and run $0 again" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$tmp" package/es5 package/LICENSE
mv "$tmp/package/LICENSE" "$tmp/package/es5/LICENSE"
echo "$MATHJAX_VERSION" > "$tmp/package/es5/VERSION"

# Swap the finished folder in: a reader never sees a half-unpacked MathJax.
rm -rf "$dest.old"
if [ -e "$dest" ]; then mv "$dest" "$dest.old"; fi
mv "$tmp/package/es5" "$dest"
rm -rf "$dest.old"
echo "MathJax $MATHJAX_VERSION unpacked into $dest"
