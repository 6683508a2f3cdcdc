# Toisio - the two commands a newcomer runs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_PERSONS ?= 20000
DEMO_DIR := var/demo

.PHONY: install demo test test-fast bench lint clean check-java check-sandbox docs i18n

check-java:
	@command -v java >/dev/null 2>&1 || { \
	  echo "Spark needs a Java 17 (or newer) runtime and 'java' is not on the PATH."; \
	  echo "On Debian/Ubuntu install it with:  sudo apt-get install -y openjdk-17-jre-headless"; \
	  exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3,11) <= sys.version_info[:2] < (3,13) else 1)' || { \
	  echo "Toisio needs Python 3.11 or 3.12 ($(PYTHON) is $$($(PYTHON) --version))."; exit 1; }

check-sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  echo "Workspace kernels run in a bubblewrap sandbox and 'bwrap' is not on the PATH."; \
	  echo "On Debian/Ubuntu install it with:  sudo apt-get install -y bubblewrap"; \
	  exit 1; }

$(STAMP): pyproject.toml constraints.txt | check-java
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The pipeline's Java functions (pseudonymise/java/): built where a JDK is installed, else the pipeline uses
# slower Spark expressions that give the same results (the build says so).
JVM_JAR := pseudonymise/java/toisio-functions.jar
$(JVM_JAR): $(wildcard pseudonymise/java/fi/toisio/spark/*.java) | $(STAMP)
	$(BIN)/python -m pseudonymise.jvm_functions build

install: check-java $(STAMP) $(JVM_JAR)

demo: install check-sandbox
	DEMO_PERSONS=$(DEMO_PERSONS) DEMO_DIR=$(DEMO_DIR) bash scripts/demo.sh

test: install
	$(BIN)/pytest -q -n 2 --dist loadfile --cov --cov-report=term --durations=15

test-fast: install
	$(BIN)/pytest -q -m "not slow"

bench: install
	$(BIN)/python -m bench.run

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var bench/results/*.tmp .pytest_cache

docs: install
	$(BIN)/python -m permits.docs
	$(BIN)/python -m secure_env.airlock.docs
	$(BIN)/python -m secure_env.workspace.docs
	$(BIN)/python scripts/layout.py --write-doc

# Extract the portal's and the decision document's strings and merge them into the fi/sv catalogues
# (then translate the new entries in toisio/locale/*/LC_MESSAGES/messages.po; tests/unit/test_i18n.py checks).
i18n: install
	$(BIN)/pybabel extract -F babel.cfg -k N_ -k _ --no-location --omit-header --sort-output -o toisio/locale/messages.pot .
	$(BIN)/pybabel update -i toisio/locale/messages.pot -d toisio/locale --no-fuzzy-matching --ignore-obsolete --width 120
