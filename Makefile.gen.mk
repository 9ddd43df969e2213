# Code generation (included by the main Makefile).
#
#   make gen         regenerate gen/model/model.go from yang/*.yang, and the
#                    eBPF objects of dataplane/ from their C sources (bpf2go)
#   make verify-gen  fail if either differs from what `make gen` would produce
#
# The eBPF objects need clang and libbpf's headers (scripts/deps.sh installs
# them when root); building Patronus does not, the objects are committed.
#
# The generator is ygot's, pinned as a `tool` in go.mod (go tool generator).
# ygot writes the absolute path of its own source file (inside the module
# cache of the machine running it) into the header; the sed below cuts it
# back to github.com/openconfig/ygot@<version>/..., so the output is
# byte-identical on every machine.

GEN_GO          ?= go
GEN_GOFMT       ?= gofmt
GEN_YANG_DIR    := yang
GEN_YANG_FILES  := $(GEN_YANG_DIR)/patronus-types.yang \
                   $(GEN_YANG_DIR)/patronus-sites.yang \
                   $(GEN_YANG_DIR)/patronus-paths.yang \
                   $(GEN_YANG_DIR)/patronus-policies.yang \
                   $(GEN_YANG_DIR)/patronus-system.yang
GEN_MODEL_FILE  := gen/model/model.go
GEN_FLAGS       := -path=$(GEN_YANG_DIR) \
                   -package_name=model \
                   -generate_fakeroot -fakeroot_name=device \
                   -compress_paths=false \
                   -shorten_enum_leaf_names \
                   -typedef_enum_with_defmod \
                   -exclude_state=false \
                   -generate_getters -generate_leaf_getters \
                   -generate_simple_unions \
                   -include_model_data \
                   -include_schema \
                   -annotations=false \
                   -generate_populate_defaults \
                   -include_descriptions=false

# $(call gen-model-cmd,<output file>): shell commands that write the generated
# model to <output file>; fails if any step fails.
gen-model-cmd = tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(GEN_GO) tool generator $(GEN_FLAGS) -output_file="$$tmp/raw.go" $(GEN_YANG_FILES) && \
	sed -E 's@[^ ]*/(github\.com/openconfig/ygot\@)@\1@' "$$tmp/raw.go" > "$$tmp/model.go" && \
	$(GEN_GOFMT) -w "$$tmp/model.go" && \
	mkdir -p "$$(dirname $(1))" && cp "$$tmp/model.go" $(1)

.PHONY: gen verify-gen gen-bpf verify-gen-bpf

GEN_BPF_PKGS := ./dataplane/classifier ./dataplane/impair
GEN_BPF_DIRS := dataplane/classifier dataplane/impair

gen: gen-bpf
	@$(call gen-model-cmd,$(GEN_MODEL_FILE))
	@echo "gen: wrote $(GEN_MODEL_FILE)"

gen-bpf:
	@bash -c '. scripts/deps.sh && deps_ensure "$${DEPS_BPF[@]}"'
	$(GEN_GO) generate $(GEN_BPF_PKGS)

# bpf2go writes in place: regenerate, then any difference from the commit is
# drift.
verify-gen-bpf: gen-bpf
	@if [ -n "$$(git status --porcelain -- $(GEN_BPF_DIRS))" ]; then \
		git status --short -- $(GEN_BPF_DIRS); git diff --stat -- $(GEN_BPF_DIRS); \
		echo "verify-gen: FAIL: the eBPF objects in $(GEN_BPF_DIRS) differ from what their C sources give (or are not committed); commit the result of 'make gen'" >&2; \
		exit 1; \
	fi
	@echo "verify-gen: eBPF objects are up to date"

verify-gen: verify-gen-bpf
	@out=$$(mktemp -d) && trap 'rm -rf "$$out"' EXIT && \
	( $(call gen-model-cmd,"$$out/model.go") ) && \
	if ! diff -u $(GEN_MODEL_FILE) "$$out/model.go" > "$$out/diff"; then \
		head -n 60 "$$out/diff"; \
		echo "verify-gen: FAIL: $(GEN_MODEL_FILE) has drifted from the YANG in $(GEN_YANG_DIR)/ (or from the generator flags); run 'make gen' and commit the result" >&2; \
		exit 1; \
	fi && \
	echo "verify-gen: $(GEN_MODEL_FILE) is up to date"
