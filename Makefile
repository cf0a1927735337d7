# The two commands a newcomer needs (see README.md):
#   make demo   set up and run the live demo
#   make test   set up, run the checks (ruff, mypy) and every test (unit + end-to-end on a real local control plane)
.PHONY: setup demo test check unit e2e crd bench clean

setup:
	bash hack/setup.sh

demo: setup
	.venv/bin/tokenfactory demo

test: setup check
	.venv/bin/python -m pytest -ra tests

# Lint and type checks (configured in pyproject.toml); `make test` runs them first.
check: setup
	.venv/bin/ruff check
	.venv/bin/mypy

unit: setup check
	.venv/bin/python -m pytest -ra tests/unit

e2e: setup
	.venv/bin/python -m pytest -ra tests/e2e

crd:
	.venv/bin/tokenfactory crd -f crds/tokenfactory.dev_tokenfactories.yaml
	cp crds/tokenfactory.dev_tokenfactories.yaml charts/tokenfactory/crds/tokenfactory.dev_tokenfactories.yaml
	cp crds/tokenfactory.dev_tokenfactories.yaml deploy/kustomize/base/tokenfactory.dev_tokenfactories.yaml
	.venv/bin/tokenfactory crd --kind TokenFactoryAllowList -f crds/tokenfactory.dev_tokenfactoryallowlists.yaml
	cp crds/tokenfactory.dev_tokenfactoryallowlists.yaml charts/tokenfactory/crds/tokenfactory.dev_tokenfactoryallowlists.yaml
	cp crds/tokenfactory.dev_tokenfactoryallowlists.yaml deploy/kustomize/base/tokenfactory.dev_tokenfactoryallowlists.yaml

bench: setup
	.venv/bin/python bench/autoscale.py --quick --json out/bench-autoscale.json

clean:
	-.venv/bin/tokenfactory cluster down
	rm -rf out .pytest_cache
