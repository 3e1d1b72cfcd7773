# coalesce: batches small socket writes of unmodified programs (LD_PRELOAD).
#
#   make            build build/libcoalesce.so
#   make test       install missing test dependencies, build, run every test
#   make demo       the main job: a real workload plain and under the shim, compared
#   make bench      the benchmark suite (docs/benchmarks.md; BENCH_QUICK=1, BENCH_ONLY=...)
#   make install    PREFIX=/usr/local DESTDIR=
#   V=1             show full command lines

CC ?= cc
PREFIX ?= /usr/local
BUILD := build

WARN := -Wall -Wextra -Werror
BASE_CFLAGS := -O2 -g $(WARN) -D_GNU_SOURCE -pthread -MMD -MP
CFLAGS ?=
SO_CFLAGS := $(BASE_CFLAGS) -fPIC -fvisibility=hidden $(CFLAGS)
SO_LDFLAGS := -shared -pthread -ldl -Wl,--version-script=shim/exports.map -Wl,-z,defs \
	-Wl,-z,now -Wl,-z,relro

ifeq ($(V),1)
Q :=
else
Q := @
endif

CORE_SRC := $(sort $(wildcard core/*.c))
SHIM_SRC := $(sort $(wildcard shim/*.c))
LIB := $(BUILD)/libcoalesce.so

UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_HELPERS := $(filter-out $(UNIT_SRC),$(sort $(wildcard tests/unit/*.c)))
INTEG_SRC := $(filter-out tests/integration/common.c,$(sort $(wildcard tests/integration/*.c)))
INTEG_BIN := $(patsubst tests/integration/%.c,$(BUILD)/tests/integration/%,$(INTEG_SRC))

# Unit tests are built three times: plain, with ASan+UBSan, with TSan.
SANITIZERS := plain asan tsan
SAN_FLAGS_plain :=
SAN_FLAGS_asan := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
SAN_FLAGS_tsan := -fsanitize=thread
UNIT_BIN := $(foreach s,$(SANITIZERS),$(patsubst tests/unit/%.c,$(BUILD)/unit-$(s)/%,$(UNIT_SRC)))

all: $(LIB)

$(BUILD)/so/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(SO_CFLAGS) -c $< -o $@

$(LIB): $(patsubst %.c,$(BUILD)/so/%.o,$(CORE_SRC) $(SHIM_SRC)) shim/exports.map
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -o $@ $(filter %.o,$^) $(SO_LDFLAGS)

define unit_rules
$(BUILD)/unit-$(1)/%: tests/unit/%.c $(CORE_SRC) $(UNIT_HELPERS)
	@mkdir -p $$(dir $$@)
	@$$(if $$(Q),echo "  CC      $$@")
	$$(Q)$$(CC) $(BASE_CFLAGS) $$(SAN_FLAGS_$(1)) $$(CFLAGS) -Icore -o $$@ $$< $(CORE_SRC) $(UNIT_HELPERS) -lcmocka
endef
$(foreach s,$(SANITIZERS),$(eval $(call unit_rules,$(s))))

$(BUILD)/tests/integration/%: tests/integration/%.c tests/integration/common.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(BASE_CFLAGS) $(CFLAGS) -o $@ $< tests/integration/common.c

# The shim built with ASan+UBSan, loaded after libasan in the integration tests.
$(BUILD)/asan/libcoalesce.so: $(CORE_SRC) $(SHIM_SRC) shim/exports.map
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(SO_CFLAGS) -fsanitize=address,undefined -fno-omit-frame-pointer \
		-o $@ $(CORE_SRC) $(SHIM_SRC) $(filter-out -Wl$(comma)-z$(comma)defs,$(SO_LDFLAGS))

comma := ,

# The shim built with TSan (make build/tsan/libcoalesce.so), for the stress
# harness (tests/stress/README.md). It is loaded before the TSan runtime,
# LD_PRELOAD="build/tsan/libcoalesce.so $(cc -print-file-name=libtsan.so)", so
# that the hooks call TSan's interceptors as the application's code would.
# The other order puts the hooks inside TSan's interceptors: those of poll,
# ppoll, epoll_wait and epoll_pwait call our hook as the real function with
# every interceptor switched off, so the fd locks the hook takes there are
# invisible to TSan and the accesses they protect are reported as races; and
# TSan's own start-up calls sigaction, which reached our hook before TSan was
# ready. TSan does not see pthread_mutex_clocklock, so the timedlock stand-in
# of the unit tests is linked in.
$(BUILD)/tsan/libcoalesce.so: $(CORE_SRC) $(SHIM_SRC) tests/unit/tsan_clocklock.c shim/exports.map
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(SO_CFLAGS) -fsanitize=thread -o $@ $(CORE_SRC) $(SHIM_SRC) \
		tests/unit/tsan_clocklock.c $(filter-out -Wl$(comma)-z$(comma)defs,$(SO_LDFLAGS))

deps:
	$(Q)scripts/setup-deps.sh

tests: $(LIB) $(UNIT_BIN) $(INTEG_BIN) $(BUILD)/asan/libcoalesce.so $(BUILD)/tsan/libcoalesce.so

test: deps
	$(Q)$(MAKE) --no-print-directory tests
	$(Q)scripts/run-tests.sh $(BUILD)

demo: $(LIB)
	$(Q)scripts/demo.sh

# The real programs of the benchmark's "apps" scenario are installed when missing; one that
# cannot be installed makes its part of the run print "skipped: <reason>".
bench: $(LIB)
	$(Q)scripts/setup-deps.sh --bench || echo "bench: some programs could not be installed; their scenarios will be skipped"
	$(Q)COALESCE_LIB=$(abspath $(LIB)) bench/run.sh

# The launcher gets the installed paths of the library and of coalesce-ab.
install: $(LIB)
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/bin \
		$(DESTDIR)$(PREFIX)/libexec/coalesce $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 0644 $(LIB) $(DESTDIR)$(PREFIX)/lib/libcoalesce.so
	sed -e 's|^COALESCE_DEFAULT_LIB=.*|COALESCE_DEFAULT_LIB=$(PREFIX)/lib/libcoalesce.so|' \
		-e 's|^COALESCE_DEFAULT_AB=.*|COALESCE_DEFAULT_AB=$(PREFIX)/libexec/coalesce/coalesce-ab|' \
		scripts/coalesce > $(DESTDIR)$(PREFIX)/bin/coalesce
	chmod 0755 $(DESTDIR)$(PREFIX)/bin/coalesce
	install -m 0755 scripts/coalesce-ab $(DESTDIR)$(PREFIX)/libexec/coalesce/coalesce-ab
	install -m 0644 docs/coalesce.1 $(DESTDIR)$(PREFIX)/share/man/man1/coalesce.1

clean:
	rm -rf $(BUILD)

.PHONY: all deps tests test demo bench install clean
.SECONDARY:

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
