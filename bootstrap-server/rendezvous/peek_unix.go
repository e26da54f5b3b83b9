//go:build unix

package rendezvous

import (
	"syscall"
	"unsafe"
)

// canPeek says whether idle connections can wait in peekReadable; where
// they cannot, each keeps a reader goroutine parked in its read.
const canPeek = true

// peekReadable reports whether a read of fd would not block: data, end of
// stream or an error are waiting. It consumes nothing.
func peekReadable(fd uintptr) bool {
	var b [1]byte
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return errno != syscall.EAGAIN && errno != syscall.EWOULDBLOCK && errno != syscall.EINTR
}
