// Command dumpdesc writes the FileDescriptorProto of proto/ray_client.proto,
// as compiled into the rayclientpb package, to stdout in binary protobuf
// form. tests/test_proto_descriptors.py compares it with the descriptor
// shipped in the Ray wheel.
package main

import (
	"fmt"
	"os"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"

	"github.com/gray-cluster/gray/proto/rayclientpb"
)

func main() {
	fdp := protodesc.ToFileDescriptorProto(rayclientpb.File_ray_client_proto)
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(fdp)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dumpdesc: marshal:", err)
		os.Exit(1)
	}
	if _, err := os.Stdout.Write(b); err != nil {
		fmt.Fprintln(os.Stderr, "dumpdesc: write:", err)
		os.Exit(1)
	}
}
