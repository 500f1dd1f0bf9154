# Thin shortcuts; each target is what the README says to type.
.PHONY: install demo test test-full bench lint

install:
	pip install -e ".[dev,cluster,mlflow]"

demo:
	cnnlab train model=lenet5 data=digits

test:
	python -m pytest -q

test-full:
	python -m pytest -q -m "slow or not slow"

bench:
	cnnlab bench --data fashion_mnist --epochs 3

lint:
	ruff check . && ruff format --check .
