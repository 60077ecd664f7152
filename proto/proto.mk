# Protobuf / gRPC code generation for the Ray Client wire protocol and the
# head<->provider protocol (proto/gray_node.proto).
# Included from the top-level Makefile; all paths are relative to the repo root.
#
#   make proto   - install the pinned generators if missing and regenerate
#                  proto/rayclientpb/*.pb.go from proto/ray_client.proto and
#                  proto/ray/*pb/*.pb.go (Ray's native GCS/raylet/core worker
#                  protocol) from proto/ray/**/*.proto, which
#                  proto/ray/fromwheel.py writes from the wheel's descriptors
#
# Needs protoc >= 3.15 on PATH (e.g. `apt-get install protobuf-compiler`).
# The generated code is committed, so normal builds and CI do not need protoc.

PROTOC_GEN_GO_VERSION      ?= v1.36.12
PROTOC_GEN_GO_GRPC_VERSION ?= v1.6.2

PROTOC    ?= protoc
PROTO_BIN ?= $(or $(shell go env GOBIN),$(shell go env GOPATH)/bin)
PROTO_SRC := proto/ray_client.proto
PROTO_OUT := proto/rayclientpb
NODE_PROTO_SRC := proto/gray_node.proto
NODE_PROTO_OUT := proto/nodepb

PROTOC_GEN_GO      = $(PROTO_BIN)/protoc-gen-go
PROTOC_GEN_GO_GRPC = $(PROTO_BIN)/protoc-gen-go-grpc

.PHONY: proto proto-tools

proto-tools:
	@if ! "$(PROTOC_GEN_GO)" --version 2>/dev/null | grep -q "$(PROTOC_GEN_GO_VERSION)"; then \
		echo "installing protoc-gen-go $(PROTOC_GEN_GO_VERSION)"; \
		GOBIN="$(PROTO_BIN)" go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION); \
	fi
	@if ! "$(PROTOC_GEN_GO_GRPC)" --version 2>/dev/null | grep -q "$(patsubst v%,%,$(PROTOC_GEN_GO_GRPC_VERSION))"; then \
		echo "installing protoc-gen-go-grpc $(PROTOC_GEN_GO_GRPC_VERSION)"; \
		GOBIN="$(PROTO_BIN)" go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION); \
	fi

proto: proto-tools
	@command -v $(PROTOC) >/dev/null || { echo "protoc not found (apt-get install protobuf-compiler)"; exit 1; }
	mkdir -p $(PROTO_OUT)
	$(PROTOC) -I proto \
		--plugin=protoc-gen-go=$(PROTOC_GEN_GO) \
		--plugin=protoc-gen-go-grpc=$(PROTOC_GEN_GO_GRPC) \
		--go_out=$(PROTO_OUT) --go_opt=paths=source_relative \
		--go-grpc_out=$(PROTO_OUT) --go-grpc_opt=paths=source_relative \
		$(PROTO_SRC)
	mkdir -p $(NODE_PROTO_OUT)
	$(PROTOC) -I proto \
		--plugin=protoc-gen-go=$(PROTOC_GEN_GO) \
		--plugin=protoc-gen-go-grpc=$(PROTOC_GEN_GO_GRPC) \
		--go_out=$(NODE_PROTO_OUT) --go_opt=paths=source_relative \
		--go-grpc_out=$(NODE_PROTO_OUT) --go-grpc_opt=paths=source_relative \
		$(NODE_PROTO_SRC)
	cd proto && $(PROTOC) -I . \
		--plugin=protoc-gen-go=$(PROTOC_GEN_GO) \
		--plugin=protoc-gen-go-grpc=$(PROTOC_GEN_GO_GRPC) \
		--go_out=. --go_opt=module=github.com/gray-cluster/gray/proto \
		--go-grpc_out=. --go-grpc_opt=module=github.com/gray-cluster/gray/proto \
		$$(find ray -name '*.proto' | sort)
