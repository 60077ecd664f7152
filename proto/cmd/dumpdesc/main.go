// Command dumpdesc writes compiled descriptors to stdout in binary protobuf
// form, for the tests that compare them with the Ray wheel's:
//
//	dumpdesc          the FileDescriptorProto of proto/ray_client.proto
//	                  (tests/test_proto_descriptors.py)
//	dumpdesc -native  a FileDescriptorSet of every proto/ray/ file, Ray's
//	                  native GCS, raylet and core worker protocol
//	                  (tests/test_native_descriptors.py)
//
// Linking both packages also proves they register without name conflicts.
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	_ "github.com/gray-cluster/gray/proto/ray/autoscalerpb"
	_ "github.com/gray-cluster/gray/proto/ray/raypb"
	"github.com/gray-cluster/gray/proto/rayclientpb"
)

func main() {
	native := flag.Bool("native", false, "dump the native protocol files (proto/ray/) as a FileDescriptorSet")
	flag.Parse()
	var msg proto.Message = protodesc.ToFileDescriptorProto(rayclientpb.File_ray_client_proto)
	if *native {
		set := &descriptorpb.FileDescriptorSet{}
		protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
			if strings.HasPrefix(fd.Path(), "ray/") {
				set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
			}
			return true
		})
		sort.Slice(set.File, func(i, j int) bool { return set.File[i].GetName() < set.File[j].GetName() })
		msg = set
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dumpdesc: marshal:", err)
		os.Exit(1)
	}
	if _, err := os.Stdout.Write(b); err != nil {
		fmt.Fprintln(os.Stderr, "dumpdesc: write:", err)
		os.Exit(1)
	}
}
