package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"

	"google.golang.org/grpc/metadata"
)

// MetadataKey is the gRPC metadata key stock Ray clients send the token in.
const MetadataKey = "authorization"

// FromMetadata reads the token of a gRPC call ("authorization: Bearer
// <token>"); present reports that the key was sent at all.
func FromMetadata(md metadata.MD) (token string, present bool) {
	vs := md.Get(MetadataKey)
	if len(vs) == 0 || vs[0] == "" {
		return "", false
	}
	tok, _ := FromAuthorization(vs[0])
	return tok, true
}

// Worker credentials: a worker runtime connects back to the head's Ray
// Client port for its task's nested ray calls. It proves it is a worker the
// pool started by presenting HMAC(node key, worker id); the node key is
// derived from the pool secret (the join secret providers hold) and the
// node id, so a raylet can mint credentials for its own workers only.

// NodeWorkerKey derives the worker key of one node.
func NodeWorkerKey(poolSecret, nodeID string) []byte {
	root := sha256.Sum256([]byte("gray worker credential v1\x00" + poolSecret))
	m := hmac.New(sha256.New, root[:])
	m.Write([]byte(nodeID))
	return m.Sum(nil)
}

// WorkerCredential is the credential of a worker id under a node key.
func WorkerCredential(nodeKey []byte, workerID string) string {
	m := hmac.New(sha256.New, nodeKey)
	m.Write([]byte(workerID))
	return hex.EncodeToString(m.Sum(nil))
}

// CheckWorkerCredential verifies a worker credential in constant time.
func CheckWorkerCredential(nodeKey []byte, workerID, cred string) bool {
	want := WorkerCredential(nodeKey, workerID)
	return len(nodeKey) > 0 && hmac.Equal([]byte(want), []byte(cred))
}
