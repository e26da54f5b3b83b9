//go:build unix

package rendezvous

import (
	"syscall"
	"unsafe"
)

// canPeek says whether idle connections can wait in peekInto; where
// they cannot, each keeps a reader goroutine parked in its read.
const canPeek = true

// peekInto reports whether a read of fd would not block: data, end of
// stream or an error are waiting. It copies what is waiting, up to
// len(b) bytes, into b and returns how many, consuming nothing.
func peekInto(fd uintptr, b []byte) (n int, ready bool) {
	r, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno != syscall.EAGAIN && errno != syscall.EWOULDBLOCK && errno != syscall.EINTR
	}
	return int(r), true
}

// readInto reads what is waiting on fd into b, without blocking.
func readInto(fd uintptr, b []byte) int {
	n, err := syscall.Read(int(fd), b)
	if err != nil {
		return 0
	}
	return n
}
