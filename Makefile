# wsgibridge: make demo | make test | make build | make bench | make fuzz

GO ?= go
BIN := bin/wsgibridge
FASTPATH := bridge/wsgibridge/fastcgi/_fastpath.so
PYTHON ?= python3
# What the tests need from Debian (the end-to-end tests use real servers),
# and what the benchmarks need besides.
DEBIAN_PACKAGES := apache2 nginx lighttpd caddy h2o haproxy libapache2-mod-fcgid python3 python3-flask python3-django libfcgi-bin gcc libc6-dev python3-dev curl
BENCH_PACKAGES := wrk hyperfine uwsgi uwsgi-plugin-python3 gunicorn
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# A count, not a duration: with go1.26 a duration-based -fuzztime can end in a
# spurious "context deadline exceeded" failure (go.dev/issue/75804).
FUZZTIME ?= 100000x
# FuzzBody runs each input through a Python worker: fewer, slower runs.
FUZZTIME_BODY ?= 5000x

.PHONY: build test demo deps install-packages fuzz bench clean

# Static (no cgo): a dynamically linked binary spends about 1 ms more in
# the loader and libc on every start, which a CGI request pays each time.
# The FastCGI workers' C fast path goes in it (build tag fastpath).
build: $(FASTPATH)
	CGO_ENABLED=0 $(GO) build -tags fastpath -o $(BIN) ./cmd/wsgibridge

# The C fast path, for Python's stable ABI: one build loads into any
# CPython >= 3.9. Python's headers come from python3-dev.
$(FASTPATH): bridge/wsgibridge/fastcgi/fastpath.c
	@include=$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null); \
	if ! command -v $(CC) >/dev/null || [ ! -f "$$include/Python.h" ]; then \
		echo "$@ needs a C compiler and Python's headers: apt-get install gcc python3-dev" \
			"(or go build ./cmd/wsgibridge for a binary whose workers read requests in Python)"; \
		exit 1; \
	fi; \
	echo "$(CC) $< -> $@"; \
	$(CC) -O2 -Wall -shared -fPIC -fvisibility=hidden -s -I"$$include" -o $@ $<

# Installs the Debian packages the tests and the demo need, when missing.
deps:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(DEBIAN_PACKAGES)"

install-packages:
	@missing=""; \
	for p in $(PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

test: deps $(FASTPATH)
	$(GO) vet -tags fastpath ./...
	@bad=$$(gofmt -l .); if [ -n "$$bad" ]; then echo "gofmt would change: $$bad"; exit 1; fi
	$(GO) test -race -count=1 ./...
	$(MAKE) fuzz

# Benchmarks: the Go hot paths, then the side-by-side scripts in bench/
# (they need Debian's wrk, hyperfine, uwsgi and uwsgi-plugin-python3 too).
bench: deps build
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(BENCH_PACKAGES)"
	bench/run.py --rounds 5 --seconds 10 --out bench/REPORT.md
	bench/cgi-cold.sh 40
	bench/cgi-apache.sh 3
	bench/worker-death.py --rounds 3 --seconds 20
	bench/memory.py --rounds 3 --seconds 10 --workers 4,8 --kills 10

# A short run of each fuzz target (longer by hand: make fuzz FUZZTIME=20000000x).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzNormalize$$' -fuzztime $(FUZZTIME) ./bridge
	$(GO) test -run '^$$' -fuzz '^FuzzFastCGIWorker$$' -fuzztime $(FUZZTIME) ./bridge
	$(GO) test -run '^$$' -fuzz '^FuzzBody$$' -fuzztime $(FUZZTIME_BODY) ./bridge
	$(GO) test -run '^$$' -fuzz '^FuzzScanner$$' -fuzztime $(FUZZTIME) ./gateway

PORT ?= 8000
demo: deps build
	@echo "wsgibridge demo: open http://127.0.0.1:$(PORT)/ (Ctrl-C stops)"
	$(BIN) http --bind 127.0.0.1:$(PORT) --chdir testdata/apps --python /usr/bin/python3 --access-log demo

clean:
	rm -rf bin $(FASTPATH)
