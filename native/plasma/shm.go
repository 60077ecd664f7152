package plasma

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// segment is the one shared-memory file behind every object: a memfd, or
// an unlinked file in a directory such as /dev/shm. Clients receive its fd
// once per connection and map it whole at offset 0.
type segment struct {
	fd   int
	size int64
	mem  []byte
}

// mmapGap is what a client subtracts from mmap_size before mapping (stock
// Ray reports the mapping length plus dlmalloc's 8-byte gap).
const mmapGap = 8

func newSegment(size int64, dir string) (*segment, error) {
	var fd int
	var err error
	if dir == "" {
		fd, err = unix.MemfdCreate("plasma", unix.MFD_CLOEXEC)
		if err != nil {
			return nil, fmt.Errorf("plasma: memfd_create: %w", err)
		}
	} else {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			return nil, fmt.Errorf("plasma: shm dir: %w", err)
		}
		if free := int64(st.Bavail) * st.Bsize; free < size {
			// Touching pages past the file system's room would SIGBUS the
			// store and every client: refuse up front.
			return nil, fmt.Errorf("plasma: %s has %d bytes free, the store needs %d", dir, free, size)
		}
		f, err := os.CreateTemp(dir, "plasma")
		if err != nil {
			return nil, fmt.Errorf("plasma: shm file: %w", err)
		}
		name := f.Name()
		fd, err = unix.Dup(int(f.Fd()))
		f.Close()
		os.Remove(name)
		if err != nil {
			return nil, fmt.Errorf("plasma: dup shm file: %w", err)
		}
		unix.CloseOnExec(fd)
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("plasma: size shared memory to %d: %w", size, err)
	}
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("plasma: mmap %d bytes: %w", size, err)
	}
	return &segment{fd: fd, size: size, mem: mem}, nil
}

// punchMin is the smallest freed range worth returning to the kernel.
const punchMin = 1 << 20

// punch gives the whole pages inside the freed range [off, off+n) back to
// the kernel, so that a large freed object stops costing memory. Partial
// pages at the ends may belong to neighbours and are left alone; failure
// only costs memory, so it is ignored.
func (g *segment) punch(off, n int64) {
	if n < punchMin {
		return
	}
	start := (off + pageSize - 1) / pageSize * pageSize
	end := (off + n) / pageSize * pageSize
	if end > start {
		_ = unix.Fallocate(g.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, start, end-start)
	}
}

func (g *segment) close() error {
	err := unix.Munmap(g.mem)
	if cerr := unix.Close(g.fd); err == nil {
		err = cerr
	}
	return err
}
