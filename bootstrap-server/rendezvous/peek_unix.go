//go:build unix

package rendezvous

import (
	"syscall"
	"unsafe"
)

// canPeek says whether idle connections can wait in a readiness check
// on the socket (readNow); where they cannot, each keeps a reader
// goroutine parked in its read.
const canPeek = true

// readNow reads what is waiting on the non-blocking socket fd into b.
// It returns the bytes read (0 at the end of the stream) and, when the
// read failed, its errno: EAGAIN when nothing is waiting.
func readNow(fd uintptr, b []byte) (int, syscall.Errno) {
	for {
		// Raw: the socket never blocks, so the scheduler need not
		// know about the call.
		r, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return 0, errno
		}
		return int(r), 0
	}
}

func wouldBlock(errno syscall.Errno) bool {
	return errno == syscall.EAGAIN || errno == syscall.EWOULDBLOCK
}
