# detpost: `make` builds every flavor this machine can, `make test` runs their
# suites, `make demo` runs the command-line tool on the bundled examples.
#
# Flavors (build/<flavor>/): cpu always; sim and cuda when nvcc is found on
# PATH or in /usr/local/cuda/bin (`make NVCC=` forces the cpu flavor alone).
#   cpu   host C only
#   sim   the cuda/ sources compiled by g++ against the SIMT emulator in cuda/simt/
#   cuda  the cuda/ sources compiled by nvcc for sm_90 plus compute_75 PTX

SHELL := /bin/bash
.DEFAULT_GOAL := all
.DELETE_ON_ERROR:

header_field = $(shell sed -n 's/^\#define DETPOST_VERSION_$(1) \([0-9][0-9]*\).*/\1/p' include/detpost.h)
VERSION_MAJOR := $(call header_field,MAJOR)
VERSION_MINOR := $(call header_field,MINOR)
VERSION_PATCH := $(call header_field,PATCH)
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)

NVCC ?= $(or $(shell command -v nvcc 2>/dev/null),$(wildcard /usr/local/cuda/bin/nvcc))
CUDA_HOME ?= $(if $(NVCC),$(patsubst %/bin/,%,$(dir $(realpath $(NVCC)))))
CUDA_LIBDIR := $(firstword $(wildcard $(CUDA_HOME)/lib64 $(CUDA_HOME)/lib))

CC ?= gcc
CXX ?= g++
SANITIZE ?=
OPT ?= -O2
BUILD ?= build
TEST_TIMEOUT ?= 1200

ifeq ($(NVCC),)
FLAVORS := cpu
SKIPPED := sim and cuda flavors skipped: $(if $(filter command line environment,$(origin NVCC)),NVCC is set \
  empty,nvcc was not found on PATH or in /usr/local/cuda/bin)
else
FLAVORS := cpu sim cuda
SKIPPED :=
endif
# The sanitizer builds cover the flavors that run here.
ifneq ($(SANITIZE),)
FLAVORS := $(filter cpu sim,$(FLAVORS))
endif

WARN := -Wall -Wextra -Wno-unused-parameter
# No contraction into FMA anywhere on the host: the CPU reference and the
# emulated kernels must round exactly like the device's DP_MUL arithmetic.
FPFLAGS := -ffp-contract=off
SANFLAGS := $(if $(SANITIZE),-fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
CFLAGS_BASE := -std=c11 $(OPT) -g -fPIC $(WARN) $(FPFLAGS) $(SANFLAGS) -Iinclude -D_GNU_SOURCE
CXXFLAGS_BASE := -std=c++17 $(OPT) -g -fPIC $(WARN) $(FPFLAGS) $(SANFLAGS) -Iinclude
NVCCFLAGS := -std=c++17 -O3 -lineinfo -Iinclude -DDETPOST_WITH_CUDA=1 \
	-gencode arch=compute_90,code=sm_90 -gencode arch=compute_75,code=compute_75 \
	-Xcompiler -fPIC,-ffp-contract=off,-Wall -Wno-deprecated-gpu-targets

LIB_C := $(sort $(wildcard host/*.c))
LIB_CU := $(sort $(wildcard cuda/*.cu))
SIMT_CPP := $(sort $(wildcard cuda/simt/*.cpp))
TOOL_C := $(sort $(wildcard host/tool/*.c))
TEST_C := $(sort $(wildcard tests/*.c))
TEST_SIM_CU := $(sort $(wildcard tests/sim/*.cu))
TEST_CU := $(sort $(wildcard tests/*.cu))
BENCH_C := $(sort $(wildcard bench/*.c))

# flavor-specific defines for host C (library, tool, tests, bench)
DEFS_cpu := -DDETPOST_WITH_CUDA=0
DEFS_sim := -DDETPOST_WITH_CUDA=1 -DDETPOST_SIM=1
DEFS_cuda := -DDETPOST_WITH_CUDA=1 -DDETPOST_CUDA_BUILD=1

LIBS_cpu := -lm
LIBS_sim := -lstdc++ -lm
LIBS_cuda := -L$(CUDA_LIBDIR) -Wl,-rpath,$(CUDA_LIBDIR) -lcublas -lcudart -lstdc++ -lm
LINK_cpu := $(CC)
LINK_sim := $(CXX)
LINK_cuda := $(CXX)
# Binaries look for their libraries in ./lib first (the GPU bundle); the old
# DT_RPATH form applies to those libraries' own dependencies too.
RPATH := -Wl,--disable-new-dtags -Wl,-rpath,'$$ORIGIN/lib'

objs = $(patsubst %.c,$(BUILD)/$(1)/obj/%.o,$(LIB_C)) \
	$(if $(filter cpu,$(1)),,$(patsubst %.cu,$(BUILD)/$(1)/obj/%.o,$(LIB_CU))) \
	$(if $(filter sim,$(1)),$(patsubst %.cpp,$(BUILD)/$(1)/obj/%.o,$(SIMT_CPP)))
tool_objs = $(patsubst %.c,$(BUILD)/$(1)/obj/%.o,$(TOOL_C))
test_objs = $(patsubst %.c,$(BUILD)/$(1)/obj/%.o,$(TEST_C) host/tool/json_io.c host/tool/args.c host/tool/inputs.c) \
	$(if $(filter sim,$(1)),$(patsubst %.cu,$(BUILD)/$(1)/obj/%.o,$(TEST_SIM_CU))) \
	$(if $(filter sim cuda,$(1)),$(patsubst %.cu,$(BUILD)/$(1)/obj/%.o,$(TEST_CU)))

.PHONY: all lib test demo install gpu-bundle bench clean deps help
all: deps $(foreach f,$(FLAVORS),$(BUILD)/$(f)/libdetpost.a $(BUILD)/$(f)/libdetpost.so $(BUILD)/$(f)/detpost)
	@echo "detpost $(VERSION): built flavors: $(FLAVORS) (in $(BUILD)/)"
	@$(if $(SKIPPED),echo "detpost: $(SKIPPED)")

lib: $(foreach f,$(FLAVORS),$(BUILD)/$(f)/libdetpost.a $(BUILD)/$(f)/libdetpost.so)

help:
	@echo "make            build every flavor this machine can ($(FLAVORS))"
	@echo "make test       build and run the test suites"
	@echo "make demo       run the detpost tool on examples/"
	@echo "make bench      time the operations (cpu, and cuda where a GPU is present)"
	@echo "make install    PREFIX=$(PREFIX) DESTDIR=... (headers, libraries, detpost.pc)"
	@echo "make gpu-bundle everything a GPU machine needs, in $(BUILD)/gpu"

# ---- third-party packages (cJSON for the tool, Criterion for the tests) -----
deps:
	@missing=""; \
	echo '#include <cjson/cJSON.h>' | $(CC) -E -x c - >/dev/null 2>&1 || missing="$$missing libcjson-dev"; \
	echo '#include <criterion/criterion.h>' | $(CC) -E -x c - >/dev/null 2>&1 || missing="$$missing libcriterion-dev"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "detpost: installing$$missing with apt-get"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null || \
	      { echo "detpost: apt-get could not install$$missing"; exit 1; }; \
	  else \
	    echo "detpost: missing$$missing. Install with:"; \
	    echo "    sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

# ---- compilation ---------------------------------------------------------
define flavor_rules
$(BUILD)/$(1)/obj/%.o: %.c
	@mkdir -p $$(@D)
	$$(CC) $$(CFLAGS_BASE) $$(DEFS_$(1)) -MMD -MP -c $$< -o $$@

$(BUILD)/$(1)/obj/tests/%.o: tests/%.c
	@mkdir -p $$(@D)
	$$(CC) $$(CFLAGS_BASE) $$(DEFS_$(1)) -Itests -MMD -MP -c $$< -o $$@

$(BUILD)/$(1)/libdetpost.a: $$(call objs,$(1))
	@rm -f $$@
	ar rcs $$@ $$^

$(BUILD)/$(1)/libdetpost.so.$(VERSION): $$(call objs,$(1))
	$$(LINK_$(1)) -shared $$(SANFLAGS) -Wl,-soname,libdetpost.so.$(VERSION_MAJOR) -o $$@ $$^ $$(LIBS_$(1))

$(BUILD)/$(1)/libdetpost.so: $(BUILD)/$(1)/libdetpost.so.$(VERSION)
	ln -sf libdetpost.so.$(VERSION) $(BUILD)/$(1)/libdetpost.so.$(VERSION_MAJOR)
	ln -sf libdetpost.so.$(VERSION) $$@

$(BUILD)/$(1)/detpost: $$(call tool_objs,$(1)) $(BUILD)/$(1)/libdetpost.a | deps
	$$(LINK_$(1)) $$(SANFLAGS) $$(RPATH) -o $$@ $$^ -lcjson $$(LIBS_$(1))

$(BUILD)/$(1)/detpost_tests: $$(call test_objs,$(1)) $(BUILD)/$(1)/libdetpost.a | deps
	$$(LINK_$(1)) $$(SANFLAGS) $$(RPATH) -o $$@ $$^ -lcriterion -lcjson $$(LIBS_$(1))

$(BUILD)/$(1)/detpost_bench: $(patsubst %.c,$(BUILD)/$(1)/obj/%.o,$(BENCH_C)) $(BUILD)/$(1)/libdetpost.a
	$$(LINK_$(1)) $$(SANFLAGS) $$(RPATH) -o $$@ $$^ $$(if $$(filter cuda,$(1)),-L$$(CUDA_LIBDIR) -lcudart) $$(LIBS_$(1))
endef
$(foreach f,cpu sim cuda,$(eval $(call flavor_rules,$(f))))

# the tool and the tests need cJSON / Criterion headers
$(foreach f,cpu sim cuda,$(call tool_objs,$(f)) $(call test_objs,$(f))): | deps

# sim: .cu and the emulator through g++
$(BUILD)/sim/obj/cuda/%.o: cuda/%.cu
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS_BASE) $(DEFS_sim) -x c++ -MMD -MP -c $< -o $@
$(BUILD)/sim/obj/cuda/simt/%.o: cuda/simt/%.cpp
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS_BASE) $(DEFS_sim) -MMD -MP -c $< -o $@
$(BUILD)/sim/obj/tests/%.o: tests/%.cu
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS_BASE) $(DEFS_sim) -Itests -x c++ -MMD -MP -c $< -o $@

# cuda: .cu through nvcc; the bench reads CUDA events through the runtime API
$(BUILD)/cuda/obj/cuda/%.o: cuda/%.cu
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/cuda/obj/tests/%.o: tests/%.cu
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -Itests -MMD -MP -c $< -o $@
$(BUILD)/cuda/obj/bench/%.o: CFLAGS_BASE += -I$(CUDA_HOME)/include

# ---- tests ---------------------------------------------------------------
# Each flavor's one binary runs every suite; its closing Synthesis line
# counts them all. The cuda suite runs only where a GPU answers. A suite that
# runs past TEST_TIMEOUT seconds fails (the sim suite takes about 25 s, 50 s
# under the sanitizers, on two cores), so a kernel that never ends fails the
# run instead of stalling it.
test: deps $(foreach f,$(FLAVORS),$(BUILD)/$(f)/detpost_tests $(BUILD)/$(f)/detpost)
	@set -e; for f in $(FLAVORS); do \
	  if [ $$f = cuda ]; then \
	    n=$$($(BUILD)/cuda/detpost devices --count 2>/dev/null || echo 0); \
	    if [ "$$n" = 0 ]; then echo "== cuda suite skipped: no CUDA device (detpost_cuda_device_count() = 0)"; continue; fi; \
	  fi; \
	  echo "== $$f suite"; \
	  timeout --kill-after=10 $(TEST_TIMEOUT) $(BUILD)/$$f/detpost_tests $(TEST_ARGS) || \
	    { rc=$$?; [ $$rc = 124 ] && echo "== $$f suite stopped after $(TEST_TIMEOUT) s (TEST_TIMEOUT)"; exit $$rc; }; \
	done
	@$(if $(SKIPPED),echo "detpost: $(SKIPPED)")

# ---- demo ----------------------------------------------------------------
DEMO_FLAVOR := $(if $(filter cuda,$(FLAVORS)),cuda,cpu)
demo: deps $(BUILD)/cpu/detpost $(if $(filter sim,$(FLAVORS)),$(BUILD)/sim/detpost)
	@bash examples/demo.sh $(BUILD)/cpu/detpost $(if $(filter sim,$(FLAVORS)),$(BUILD)/sim/detpost)

# ---- benchmark -----------------------------------------------------------
bench: $(BUILD)/cpu/detpost_bench $(if $(filter cuda,$(FLAVORS)),$(BUILD)/cuda/detpost_bench)
	$(BUILD)/cpu/detpost_bench --out $(BUILD)/bench-cpu.json
	@if [ -x $(BUILD)/cuda/detpost_bench ] && [ "$$($(BUILD)/cuda/detpost devices --count 2>/dev/null || echo 0)" != 0 ]; then \
	  $(BUILD)/cuda/detpost_bench --out $(BUILD)/bench-cuda.json; \
	else echo "detpost: cuda benchmark skipped (no CUDA device)"; fi

# ---- install -------------------------------------------------------------
PREFIX ?= /usr/local
DESTDIR ?=
BEST := $(if $(filter cuda,$(FLAVORS)),cuda,cpu)
PC_PRIVATE_cpu := -lm
PC_PRIVATE_cuda := -L$(CUDA_LIBDIR) -lcublas -lcudart -lstdc++ -lm
install: $(BUILD)/$(BEST)/libdetpost.a $(BUILD)/$(BEST)/libdetpost.so
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/detpost.h $(DESTDIR)$(PREFIX)/include/detpost.h
	install -m 644 $(BUILD)/$(BEST)/libdetpost.a $(DESTDIR)$(PREFIX)/lib/libdetpost.a
	install -m 755 $(BUILD)/$(BEST)/libdetpost.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libdetpost.so.$(VERSION)
	ln -sf libdetpost.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libdetpost.so.$(VERSION_MAJOR)
	ln -sf libdetpost.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libdetpost.so
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$${prefix}/lib' 'includedir=$${prefix}/include' '' \
	  'Name: detpost' 'Description: Object-detection post-processing on the CPU and CUDA ($(BEST) build)' \
	  'Version: $(VERSION)' 'Libs: -L$${libdir} -ldetpost' 'Libs.private: $(PC_PRIVATE_$(BEST))' \
	  'Cflags: -I$${includedir}' > $(DESTDIR)$(PREFIX)/lib/pkgconfig/detpost.pc
	@# a system install is found by the loader only once its cache knows the new library
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null 2>&1; then ldconfig; fi
	@echo "detpost $(VERSION) ($(BEST) flavor) installed under $(DESTDIR)$(PREFIX)"

# ---- the folder a GPU machine needs ----------------------------------------
GPU := $(BUILD)/gpu
gpu-bundle: deps $(BUILD)/cuda/detpost_tests $(BUILD)/cuda/detpost $(BUILD)/cuda/detpost_bench $(BUILD)/cuda/libdetpost.so
	@test -n "$(NVCC)" || { echo "gpu-bundle needs nvcc"; exit 1; }
	rm -rf $(GPU) && mkdir -p $(GPU)/lib
	cp $(BUILD)/cuda/detpost_tests $(BUILD)/cuda/detpost $(BUILD)/cuda/detpost_bench $(GPU)/
	cp -L $(BUILD)/cuda/libdetpost.so $(GPU)/lib/libdetpost.so
	bash bench/bundle-libs.sh $(GPU)
	@echo "detpost: $(GPU) is ready; on a GPU machine run: bash bench/gpu-check.sh"

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
