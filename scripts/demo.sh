#!/bin/sh
# Run the whole job on the first dataset that is available: MNIST if it is cached or downloadable,
# else Fashion-MNIST (on Debian/Ubuntu as root, its package is installed first), else scikit-learn's digits.
set -u
BIN=${BIN:-.venv/bin}
if "$BIN/cnnlab" data mnist --download; then
    dataset=mnist
else
    if ! "$BIN/cnnlab" data fashion_mnist --quiet && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "Installing Debian's dataset-fashion-mnist (an offline copy of Fashion-MNIST)..."
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null
    fi
    if "$BIN/cnnlab" data fashion_mnist; then dataset=fashion_mnist; else dataset=digits; fi
fi
echo "Running the seed recipe on $dataset"
exec "$BIN/cnnlab" run --dataset "$dataset" "$@"
