package plasma

import (
	"encoding/binary"
	"encoding/hex"
	"sort"
	"testing"

	flatbuffers "github.com/google/flatbuffers/go"

	fb "github.com/gray-cluster/gray/native/fbs/plasmafb"
)

// The frames below are rebuilt from the decoded captures of stock Ray
// 2.60.0 in shared/research/ray-native-data/unix_frames_single_node.txt:
// for every table slot the capture gives its offset inside the table and
// its raw value (for strings and vectors: the uoffset, which fixes where
// the referenced bytes start), plus the body length. Rebuilding the exact
// layout and decoding it with plasmafb checks our schema slot by slot.

// field is one table slot: its byte offset in the table and raw value;
// ref, if set, is placed at (table + off + uoffset-in-raw).
type field struct {
	slot int
	off  int
	raw  string // little-endian hex as captured
	ref  []byte
}

func le32(v int) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(v)) }

func fbString(b []byte) []byte {
	return append(append(le32(len(b)), b...), 0)
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// assemble lays out a flatbuffer: root uoffset at 0, the vtable ending at
// the table, the table at tablePos, and every referenced blob where the
// captured uoffsets point.
func assemble(t *testing.T, total, tablePos, nslots, tableSize int, fields []field, extra map[int][]byte) []byte {
	t.Helper()
	buf := make([]byte, total)
	used := make([]bool, total)
	put := func(pos int, b []byte) {
		if pos < 0 || pos+len(b) > total {
			t.Fatalf("blob at %d (%d bytes) outside the %d-byte frame", pos, len(b), total)
		}
		for i := range b {
			if used[pos+i] {
				t.Fatalf("blob at %d overlaps at byte %d", pos, pos+i)
			}
			used[pos+i] = true
		}
		copy(buf[pos:], b)
	}
	vtPos := tablePos - (4 + 2*nslots)
	put(0, le32(tablePos))
	vt := binary.LittleEndian.AppendUint16(nil, uint16(4+2*nslots))
	vt = binary.LittleEndian.AppendUint16(vt, uint16(tableSize))
	offs := make([]uint16, nslots)
	for _, f := range fields {
		offs[f.slot] = uint16(f.off)
	}
	for _, o := range offs {
		vt = binary.LittleEndian.AppendUint16(vt, o)
	}
	put(vtPos, vt)
	put(tablePos, le32(tablePos-vtPos))
	for _, f := range fields {
		raw := unhex(t, f.raw)
		put(tablePos+f.off, raw)
		if f.ref != nil {
			put(tablePos+f.off+int(binary.LittleEndian.Uint32(raw)), f.ref)
		}
	}
	for pos, b := range extra {
		put(pos, b)
	}
	return buf
}

func TestCapturedCreateRequest(t *testing.T) {
	// 08:52:35.153530 plasma_store in type=1:PlasmaCreateRequest len=192 (a 10 MB ray.put).
	id := unhex(t, "00ffffffffffffffffffffffffffffffffffffff0100000001e1f505")
	node := unhex(t, "15e6382442e384c7362470db8cdd95f8245f07c5df0f774374e73020")
	worker := unhex(t, "01000000ffffffffffffffffffffffffffffffffffffffffffffffff")
	body := assemble(t, 192, 24, 8, 40, []field{
		{0, 4, "28000000", fbString(id)},
		{1, 8, "48000000", fbString(node)},
		{2, 12, "68000000", fbString([]byte("192.0.2.2"))},
		{3, 16, "29390000", nil},
		{4, 20, "70000000", fbString(worker)},
		{6, 24, "f700a00000000000", nil},
		{7, 32, "0600000000000000", nil},
	}, nil)
	req, err := decodeCreate(body)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(req.id[:]) != hex.EncodeToString(id) || string(req.owner.NodeID) != string(node) ||
		string(req.owner.WorkerID) != string(worker) || req.owner.IP != "192.0.2.2" || req.owner.Port != 14633 ||
		req.dataSize != 10486007 || req.metaSize != 6 || req.mutable || req.source != 0 || req.deviceNum != 0 {
		t.Fatalf("decoded %+v", req)
	}
}

func TestCapturedGetReply(t *testing.T) {
	// 08:52:35.247332 plasma_store out type=9:PlasmaGetReply len=224.
	id := unhex(t, "00ffffffffffffffffffffffffffffffffffffff0100000001e1f505")
	specBytes := structBytes(17, 1, 64, 64, 10486007, 10486071, 6, 10486013)
	body := assemble(t, 224, 20, 6, 28, []field{
		{0, 4, "18000000", append(le32(1), le32(4)...)}, // vector of 1 string, the string 4 bytes on
		{1, 8, "40000000", append(le32(1), specBytes...)},
		{2, 12, "94000000", append(le32(1), le32(17)...)},
		{3, 16, "98000000", append(le32(1), binary.LittleEndian.AppendUint64(nil, 1)...)},
		{4, 20, "a4000000", append(le32(1), binary.LittleEndian.AppendUint64(nil, 6436552712)...)},
		{5, 24, "b0000000", le32(0)},
	}, map[int][]byte{56: fbString(id)})
	m := fb.GetRootAsPlasmaGetReply(body, 0)
	var sp fb.PlasmaObjectSpec
	if m.ObjectIdsLength() != 1 || hex.EncodeToString(m.ObjectIds(0)) != hex.EncodeToString(id) || !m.PlasmaObjects(&sp, 0) {
		t.Fatal("ids / objects")
	}
	if sp.SegmentIndex() != 17 || sp.UniqueFdId() != 1 || sp.DataOffset() != 64 || sp.DataSize() != 10486007 ||
		sp.MetadataOffset() != 10486071 || sp.MetadataSize() != 6 || sp.AllocatedSize() != 10486013 {
		t.Fatalf("spec %d %d %d %d", sp.SegmentIndex(), sp.DataOffset(), sp.DataSize(), sp.MetadataSize())
	}
	if m.StoreFds(0) != 17 || m.UniqueFdIds(0) != 1 || m.MmapSizes(0) != 6436552712 || m.HandlesLength() != 0 {
		t.Fatal("fd vectors")
	}
	// Our reply for the same object fills the same six slots.
	var oid ObjectID
	copy(oid[:], id)
	ours := encodeGetReply([]ObjectID{oid}, []spec{{present: true, dataOff: 64, dataSize: 10486007, metaSize: 6, allocSize: 10486013}}, 17, 6436552712)
	if got, want := slots(ours), []int{0, 1, 2, 3, 4, 5}; !equalInts(got, want) {
		t.Fatalf("our get reply fills slots %v, stock %v", got, want)
	}
	m = fb.GetRootAsPlasmaGetReply(ours, 0)
	m.PlasmaObjects(&sp, 0)
	if sp.SegmentIndex() != 17 || sp.HeaderOffset() != 64 || sp.MetadataOffset() != 10486071 || m.MmapSizes(0) != 6436552712 {
		t.Fatal("our get reply values")
	}
}

func TestCapturedCreateReply(t *testing.T) {
	// 08:52:25.932364 plasma_store out type=3:PlasmaCreateReply len=176 (the 8-byte warm-up object).
	id := unhex(t, "580e5fadf5fbebd6ed5f4f407a99b48a40c33015e6626cd8"+"00000000")
	specBytes := structBytes(17, 1, 64, 64, 8, 72, 0, 8)
	body := assemble(t, 176, 28, 7, 108, []field{
		{0, 24, "58000000", fbString(id)},
		{2, 28, hex.EncodeToString(specBytes), nil},
		{4, 20, "11000000", nil},
		{5, 12, "0100000000000000", nil},
		{6, 4, "0800a67f01000000", nil},
	}, nil)
	m := fb.GetRootAsPlasmaCreateReply(body, 0)
	var sp fb.PlasmaObjectSpec
	if m.PlasmaObject(&sp) == nil || sp.DataOffset() != 64 || sp.DataSize() != 8 || sp.MetadataOffset() != 72 {
		t.Fatal("spec")
	}
	if m.StoreFd() != 17 || m.UniqueFdId() != 1 || m.MmapSize() != 6436552712 || m.RetryWithRequestId() != 0 || m.Error() != 0 {
		t.Fatal("reply fields")
	}
	var oid ObjectID
	copy(oid[:], id)
	ours := encodeCreateReply(oid, spec{present: true, dataOff: 64, dataSize: 8, allocSize: 8}, fb.PlasmaErrorOK, 0, 17, 6436552712)
	if got, want := slots(ours), []int{0, 2, 4, 5, 6}; !equalInts(got, want) {
		t.Fatalf("our create reply fills slots %v, stock %v", got, want)
	}
	if len(ours) > 176 {
		t.Fatalf("our create reply is %d bytes, stock 176", len(ours))
	}
	m = fb.GetRootAsPlasmaCreateReply(ours, 0)
	m.PlasmaObject(&sp)
	if sp.SegmentIndex() != 17 || sp.UniqueFdId() != 1 || sp.DataOffset() != 64 || sp.MetadataOffset() != 72 ||
		m.StoreFd() != 17 || m.UniqueFdId() != 1 || m.MmapSize() != 6436552712 {
		t.Fatal("our create reply values")
	}
}

func TestCapturedConnectAndDelete(t *testing.T) {
	// 08:52:25.927715 PlasmaConnectReply len=24: slot 0 at 4 = 333ba57f01000000.
	body := assemble(t, 24, 12, 1, 12, []field{{0, 4, "333ba57f01000000", nil}}, nil)
	if got := fb.GetRootAsPlasmaConnectReply(body, 0).MemoryCapacity(); got != 6436502323 {
		t.Fatalf("memory_capacity %d", got)
	}
	if got := slots(encodeConnectReply(6436502323)); !equalInts(got, []int{0}) {
		t.Fatalf("our connect reply slots %v", got)
	}
	// 08:52:26.104616 PlasmaDeleteRequest len=68: 0@4 count=1, 1@8 uoffset 4 -> [1 string].
	id := unhex(t, "580e5fadf5fbebd6ed5f4f407a99b48a40c33015e6626cd800000000")
	body = assemble(t, 68, 12, 2, 12, []field{
		{0, 4, "01000000", nil},
		{1, 8, "04000000", append(le32(1), le32(4)...)},
	}, map[int][]byte{32: fbString(id)})
	ids, err := decodeDelete(body)
	if err != nil || len(ids) != 1 || hex.EncodeToString(ids[0][:]) != hex.EncodeToString(id) {
		t.Fatalf("delete request: %v %v", ids, err)
	}
	if got := slots(encodeDeleteReply(ids, []fb.PlasmaError{0})); !equalInts(got, []int{0, 1, 2}) {
		t.Fatalf("our delete reply slots %v", got)
	}
}

// structBytes is the 80-byte PlasmaObjectSpec as the generated code lays it
// out (header_offset = data_offset, as stock reports it).
func structBytes(seg int32, ufd int64, hdr, data, size, metaOff, metaSize, alloc uint64) []byte {
	b := flatbuffers.NewBuilder(0)
	fb.CreatePlasmaObjectSpec(b, seg, ufd, hdr, data, size, metaOff, metaSize, alloc, false, 0, false)
	out := b.Bytes[b.Head():]
	if len(out) != 80 {
		panic(len(out))
	}
	return out
}

// slots lists the vtable slots a flatbuffer's root table fills.
func slots(buf []byte) []int {
	var tab flatbuffers.Table
	tab.Bytes = buf
	tab.Pos = flatbuffers.GetUOffsetT(buf)
	vt := flatbuffers.UOffsetT(flatbuffers.SOffsetT(tab.Pos) - tab.GetSOffsetT(tab.Pos))
	n := (int(tab.GetVOffsetT(vt)) - 4) / 2
	var out []int
	for i := 0; i < n; i++ {
		if tab.Offset(flatbuffers.VOffsetT(4+2*i)) != 0 {
			out = append(out, i)
		}
	}
	sort.Ints(out)
	return out
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCapturedGetSealRelease(t *testing.T) {
	id := unhex(t, "00ffffffffffffffffffffffffffffffffffffff0100000001e1f505")
	// 08:52:35.246408 PlasmaGetRequest len=64: 0@4 uoffset 4 -> [1 string]; timeout_ms absent.
	body := assemble(t, 64, 12, 1, 8, []field{{0, 4, "04000000", append(le32(1), le32(4)...)}},
		map[int][]byte{28: fbString(id)})
	ids, timeout, err := decodeGet(body)
	if err != nil || len(ids) != 1 || hex.EncodeToString(ids[0][:]) != hex.EncodeToString(id) || timeout != 0 {
		t.Fatalf("get request: %v %d %v", ids, timeout, err)
	}
	// 08:52:35.212074 PlasmaSealRequest and 08:52:35.249641 PlasmaReleaseRequest,
	// both len=56: 0@4 uoffset 4 -> the id string; may_unmap absent.
	body = assemble(t, 56, 12, 1, 8, []field{{0, 4, "04000000", fbString(id)}}, nil)
	for _, typ := range []fb.MessageType{fb.MessageTypePlasmaSealRequest, fb.MessageTypePlasmaReleaseRequest} {
		got, mayUnmap, err := decodeIDMessage(typ, body)
		if err != nil || hex.EncodeToString(got[:]) != hex.EncodeToString(id) || mayUnmap {
			t.Fatalf("%v: %x %v %v", typ, got, mayUnmap, err)
		}
	}
}
