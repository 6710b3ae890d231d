# siokit: `make up` brings the local cluster up and deployed; `make test` runs every test.
# Each target does its own set-up: Debian packages (scripts/deps.sh, sudo when not root) and
# Python packages into .venv (pinned by constraints.txt), never into the system Python.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip
PYTEST := $(BIN)/pytest
STATE := .siokit
# JUnit reports of each `make test` stage, added up into one closing line by scripts/test-summary.py.
REPORTS := $(STATE)/test-reports
JUNIT = --junitxml=$(REPORTS)/$@.xml
VENDOR_JS := app/static/vendor/socket.io.min.js
# The Socket.IO Admin UI's static files, served by nginx behind basic auth (never by the app).
ADMIN_UI := build/admin-ui
CONNECTIONS ?= 160000
HOLD ?= 300
BENCH_TARGET ?= cluster
BENCH_ARGS ?= --broadcast-every 60 --echo-rate 20

.PHONY: help deps venv static lint unit integration check test up down verify doctor bench drills \
	local-up local-down image cluster-test converge-test wheelhouse clean \
	vagrant-up vagrant-verify vagrant-test vagrant-down vagrant-validate

help:
	@echo "make up       build the local cluster and deploy it with ansible-playbook site.yml"
	@echo "make test     every test (what CI runs)"
	@echo "make check    fast: lint + unit + loopback integration"
	@echo "make verify   testinfra against the running local cluster"
	@echo "make doctor   siokit doctor against the running local cluster"
	@echo "make down     remove the local cluster / loopback stack"
	@echo "make bench    load benchmark (CONNECTIONS=$(CONNECTIONS)); results in BENCHMARKS.md"
	@echo "make drills   fault drills on the local cluster under load; results in RELIABILITY.md"
	@echo "make local-up the loopback stack (Redis, uWSGI x2, nginx on 127.0.0.1:8080), no containers"

$(STATE)/deps.stamp: scripts/deps.sh
	@mkdir -p $(STATE)
	bash scripts/deps.sh
	@touch $@

deps: $(STATE)/deps.stamp

# Vagrant and QEMU's tools from apt: unit and integration tests check the Vagrantfile and the box
# script with them, so `make unit` alone on a fresh machine installs them too.
$(STATE)/vagrant-packages.stamp: scripts/vagrant-setup.sh | $(STATE)/deps.stamp
	bash scripts/vagrant-setup.sh --packages
	@touch $@

$(VENV)/.stamp: pyproject.toml constraints.txt requirements-dev.txt | $(STATE)/deps.stamp
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -r requirements-dev.txt -e '.[uwsgi,report]'
	$(BIN)/python -c "import uwsgidecorators" 2>/dev/null || true
	@touch $@

venv: $(VENV)/.stamp

# The official Socket.IO JS client, from the npm registry at build time (never a CDN).
$(VENDOR_JS): package.json package-lock.json | $(STATE)/deps.stamp
	npm ci --no-audit --no-fund --silent
	mkdir -p $(dir $@)
	cp node_modules/socket.io-client/dist/socket.io.min.js $@

# The Socket.IO Admin UI (@socket.io/admin-ui's ui/dist, pinned in package.json), for the nginx role.
$(ADMIN_UI)/index.html: package.json package-lock.json | $(STATE)/deps.stamp
	test -f node_modules/@socket.io/admin-ui/ui/dist/index.html -a node_modules/.package-lock.json -nt package-lock.json \
		|| npm ci --no-audit --no-fund --silent
	rm -rf $(ADMIN_UI)
	mkdir -p $(dir $(ADMIN_UI))
	cp -r node_modules/@socket.io/admin-ui/ui/dist $(ADMIN_UI)

static: $(VENDOR_JS) $(ADMIN_UI)/index.html

# ruff format --check: a formatting slip fails here, not in a later revert commit.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/yamllint -s ansible molecule
	cd ansible && ../$(BIN)/ansible-lint --profile production

unit: venv static $(STATE)/vagrant-packages.stamp
	$(PYTEST) -q $(JUNIT) tests/unit

# Loopback integration (real nginx, uWSGI, Redis, Chromium); the real-host converge is `cluster`.
integration: venv static $(STATE)/vagrant-packages.stamp
	$(PYTEST) -q $(JUNIT) -m "not cluster" tests/integration

# Roles converged on one systemd container: idempotence, byte identity with siokit render, TLS.
# Docker and the base image come first, and their absence fails the stage instead of skipping it.
converge-test: venv static image
	SIOKIT_REQUIRE_DOCKER=1 $(PYTEST) -q $(JUNIT) -m cluster tests/integration

# Wheels for the hosts (uWSGI compiled with SSL against Debian 12's python3), built in a container.
wheelhouse: venv
	bash scripts/wheelhouse.sh

# The Vagrantfile parses and its defaults are coherent (Vagrant from scripts/vagrant-setup.sh), and the
# box script's inputs check out; the VMs themselves boot only in vagrant-test (slow under emulation).
vagrant-validate: $(STATE)/vagrant-packages.stamp
	vagrant validate
	bash scripts/vagrant-box.sh --check

check: lint vagrant-validate unit integration

# The local cluster: six systemd containers (lb, app1, app2, redis, loadgen, monitor) deployed by
# ansible-playbook site.yml through Molecule, then a health line and the URL for a browser.
up: venv static
	bash scripts/cluster.sh up

verify: venv
	bash scripts/cluster.sh verify

# The running local cluster checked by siokit doctor (also: ansible-playbook ansible/doctor.yml).
doctor: venv
	bash scripts/cluster.sh require "make doctor"
	$(BIN)/python -m siokit.cli doctor --url http://127.0.0.1:$${SIOKIT_LB_HTTP_PORT:-8080} \
		--inventory molecule/cluster/inventory.yml

down: venv
	bash scripts/cluster.sh down
	$(BIN)/python -m siokit.cli local down

image:
	bash scripts/docker-ensure.sh
	bash scripts/build-image.sh

# The full Molecule sequence on a fresh cluster: destroy, syntax, create, converge, idempotence
# (zero changes), verify (testinfra), destroy. It replaces a cluster left up by `make up`.
cluster-test: venv static
	PYTEST_ADDOPTS="--junitxml=$(CURDIR)/$(REPORTS)/$@.xml" bash scripts/cluster.sh test

local-up: venv static
	$(BIN)/python -m siokit.cli local up

local-down: venv
	$(BIN)/python -m siokit.cli local down

# Ends on one line adding up every stage's tests (CI reads the closing lines), with each failed test
# named above it, also when a stage failed and stopped the run.
test:
	rm -rf $(REPORTS)
	$(MAKE) check converge-test cluster-test; stages=$$?; \
		$(PYTHON) scripts/test-summary.py $(REPORTS) unit integration converge-test cluster-test && exit $$stages

# The load benchmark: ramp to CONNECTIONS through the lb, hold HOLD seconds with Engine.IO pings,
# broadcast, ramp down; per-component memory and CPU. BENCH_TARGET=loopback runs without containers.
bench: venv static
	$(BIN)/python -m siokit.cli bench --target $(BENCH_TARGET) --connections $(CONNECTIONS) --hold $(HOLD) $(BENCH_ARGS)

# Fault drills against the local cluster (`make up` first) while `siokit load` holds DRILL_CONNECTIONS
# sockets: DRILLS=kill9,redis,reload,host-loss,storm,slow,abuse,ports,fallback (default all, ~4 min each).
# JSON + Markdown under reports/. SIOKIT_STATE_DIR: the .siokit of the checkout that ran `make up`.
DRILL_CONNECTIONS ?= 3000
DRILLS ?=
drills: venv
	$(BIN)/python -m siokit.drills --connections $(DRILL_CONNECTIONS) $(if $(DRILLS),--only $(DRILLS))

# The cluster as libvirt VMs (Vagrantfile, docs/vagrant.md): QEMU emulation where KVM is unusable,
# the box built from the Debian mirror. VAGRANT_APP_HOSTS=1 keeps it to four VMs (4.5 GiB); 2 gives
# all five. VMs get what containers cannot: LimitNOFILE above 20,000 and every sysctl.
VAGRANT_APP_HOSTS ?= 1
VAGRANT_ENV = SIOKIT_APP_HOSTS=$(VAGRANT_APP_HOSTS)

vagrant-up: venv
	$(VAGRANT_ENV) bash scripts/vagrant.sh up

vagrant-verify: venv
	$(VAGRANT_ENV) bash scripts/vagrant.sh verify

# up, verify, a small load through the lb, idempotence, reboot check, destroy (also on failure).
vagrant-test: venv
	$(VAGRANT_ENV) bash scripts/vagrant.sh test

vagrant-down:
	$(VAGRANT_ENV) bash scripts/vagrant.sh down

clean:
	rm -rf $(STATE) node_modules app/static/vendor $(ADMIN_UI)
